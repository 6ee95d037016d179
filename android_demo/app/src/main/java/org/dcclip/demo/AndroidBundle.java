package org.dcclip.demo;

import android.content.Context;
import android.content.res.AssetManager;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import org.dcclip.core.BundleSource;
import org.dcclip.core.IO;

/**
 * Where the app finds its bundle: pushed with adb to the app's external files folder
 * (/sdcard/Android/data/org.dcclip.demo/files/bundle/, no permission needed on API 19+), else packed into the APK's
 * assets/bundle/ at build time. .pte files from assets are copied to internal storage once (Module.load takes a path).
 */
final class AndroidBundle {
    private AndroidBundle() {}

    static BundleSource find(Context context) {
        File ext = context.getExternalFilesDir(null);
        if (ext != null && new File(ext, "bundle/bundle.json").isFile()) return new BundleSource.Dir(new File(ext, "bundle"));
        return new Assets(context.getAssets(), "bundle");
    }

    /** A path Module.load can open for a bundle file. */
    static String path(Context context, BundleSource source, String name) throws IOException {
        if (source instanceof BundleSource.Dir) return new File(((BundleSource.Dir) source).root, name).getPath();
        File out = new File(context.getFilesDir(), "bundle/" + name);
        if (!out.isFile()) {
            out.getParentFile().mkdirs();
            File tmp = new File(out.getPath() + ".tmp");
            FileOutputStream o = new FileOutputStream(tmp);
            try {
                o.write(IO.readAll(source.open(name)));
            } finally {
                o.close();
            }
            if (!tmp.renameTo(out)) throw new IOException("could not write " + out);
        }
        return out.getPath();
    }

    static final class Assets implements BundleSource {
        private final AssetManager assets;
        private final String dir;

        Assets(AssetManager assets, String dir) {
            this.assets = assets;
            this.dir = dir;
        }

        @Override
        public InputStream open(String name) throws IOException {
            return assets.open(dir + "/" + name);
        }

        @Override
        public boolean exists(String name) {
            try {
                assets.open(dir + "/" + name).close();
                return true;
            } catch (IOException e) {
                return false;
            }
        }

        @Override
        public String toString() {
            return "assets/" + dir;
        }
    }
}
