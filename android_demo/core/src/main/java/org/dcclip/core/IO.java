package org.dcclip.core;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** Stream and raw-file helpers shared by the app (assets) and the JVM (files, tests). */
public final class IO {
    private IO() {}

    public static byte[] readAll(InputStream in) throws IOException {
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buf = new byte[1 << 16];
            int n;
            while ((n = in.read(buf)) > 0) out.write(buf, 0, n);
            return out.toByteArray();
        } finally {
            in.close();
        }
    }

    /** Raw little-endian float32 (numpy's '<f4' tofile, the bundle's label embeddings and the parity tensors). */
    public static float[] floatsLE(byte[] raw) {
        if (raw.length % 4 != 0) throw new IllegalArgumentException("raw float32 data has " + raw.length + " bytes, not a multiple of 4");
        float[] out = new float[raw.length / 4];
        ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out);
        return out;
    }
}
