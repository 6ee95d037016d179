package org.dcclip.core;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.util.List;
import java.util.Map;

/** The files Python wrote for these tests (tests/test_android_core.py): -Ddcclip.golden=DIR. */
final class Golden {
    private Golden() {}

    static File dir() {
        String d = System.getProperty("dcclip.golden");
        if (d == null) throw new IllegalStateException("run with -Ddcclip.golden=DIR (tests/test_android_core.py does)");
        return new File(d);
    }

    static File file(String name) {
        return new File(dir(), name);
    }

    static String text(File f) throws IOException {
        return new String(IO.readAll(new FileInputStream(f)), "UTF-8");
    }

    static Map<String, Object> json(String name) throws IOException {
        return Json.parseObject(text(file(name)));
    }

    static float[] floats(File f) throws IOException {
        return IO.floatsLE(IO.readAll(new FileInputStream(f)));
    }

    static int[] ints(Object list) {
        List<?> l = (List<?>) list;
        int[] a = new int[l.size()];
        for (int k = 0; k < a.length; k++) a[k] = ((Number) l.get(k)).intValue();
        return a;
    }

    static WordPieceTokenizer tokenizer() throws IOException {
        return WordPieceTokenizer.fromJson(text(file("tokenizer.json")));
    }
}
