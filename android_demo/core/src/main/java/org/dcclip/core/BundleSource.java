package org.dcclip.core;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;

/** Where a bundle's files are read from: a folder (JVM, or a bundle pushed with adb) or the APK's assets (the app). */
public interface BundleSource {
    InputStream open(String name) throws IOException;

    boolean exists(String name);

    /** A folder on disk. */
    final class Dir implements BundleSource {
        public final File root;

        public Dir(File root) {
            this.root = root;
        }

        @Override
        public InputStream open(String name) throws IOException {
            return new FileInputStream(new File(root, name));
        }

        @Override
        public boolean exists(String name) {
            return new File(root, name).isFile();
        }

        @Override
        public String toString() {
            return root.getPath();
        }
    }
}
