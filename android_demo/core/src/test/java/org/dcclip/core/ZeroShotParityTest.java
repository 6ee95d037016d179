package org.dcclip.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.BeforeClass;
import org.junit.Test;

/** Given Python's embeddings (a fake Encoder returns them), the Java top-5 is Python's top-5, index for index. */
public class ZeroShotParityTest {
    private static File parity;
    private static Map<String, Object> p;
    private static Bundle bundle;

    /** Returns the embedding Python computed for the same input; fails on an input Python never saw. */
    static final class FakeEncoder implements Encoder {
        final Map<String, float[]> images = new HashMap<String, float[]>();
        final Map<String, float[]> texts = new HashMap<String, float[]>();
        int imageCalls, textCalls;

        @Override
        public float[] encodeImage(float[] pixels, int size) {
            imageCalls++;
            float[] e = images.get(key(pixels));
            if (e == null) throw new AssertionError("no Python embedding for this image tensor");
            return e;
        }

        @Override
        public float[] encodeText(long[] ids) {
            textCalls++;
            float[] e = texts.get(Arrays.toString(ids));
            if (e == null) throw new AssertionError("no Python embedding for ids " + Arrays.toString(ids));
            return e;
        }

        @Override
        public void close() {}

        static String key(float[] x) {
            return Integer.toHexString(Arrays.hashCode(x)) + ":" + x.length;
        }
    }

    private static FakeEncoder fake;

    @BeforeClass
    public static void load() throws Exception {
        File dir = Golden.file("bundle");
        parity = new File(dir, "parity");
        p = Json.parseObject(Golden.text(new File(parity, "parity.json")));
        bundle = new Bundle(new BundleSource.Dir(dir));
        int dim = ((Number) p.get("dim")).intValue();
        fake = new FakeEncoder();
        float[] img = Golden.floats(new File(parity, (String) ((Map<?, ?>) p.get("image_embeddings")).get("file")));
        List<?> images = (List<?>) p.get("images");
        for (int i = 0; i < images.size(); i++) {
            float[] x = Golden.floats(new File(parity, (String) ((Map<?, ?>) images.get(i)).get("tensor")));
            fake.images.put(FakeEncoder.key(x), Arrays.copyOfRange(img, i * dim, (i + 1) * dim));
        }
        float[] txt = Golden.floats(new File(parity, (String) ((Map<?, ?>) p.get("text_embeddings")).get("file")));
        List<?> texts = (List<?>) p.get("texts");
        for (int i = 0; i < texts.size(); i++) {
            int[] ids = Golden.ints(((Map<?, ?>) texts.get(i)).get("ids"));
            long[] l = new long[ids.length];
            for (int k = 0; k < l.length; k++) l[k] = ids[k];
            fake.texts.put(Arrays.toString(l), Arrays.copyOfRange(txt, i * dim, (i + 1) * dim));
        }
    }

    @Test
    public void top5EqualsPythonInEveryLanguage() throws Exception {
        LabelSet labels = LabelSet.read(new BundleSource.Dir(parity), "parity.json", bundle.embedDim);
        Map<?, ?> top = (Map<?, ?>) p.get("top");
        assertEquals(labels.languages(), new ArrayList<Object>(top.keySet()));
        List<?> images = (List<?>) p.get("images");
        int checked = 0;
        for (String lang : labels.languages()) {
            for (int i = 0; i < images.size(); i++) {
                float[] x = Golden.floats(new File(parity, (String) ((Map<?, ?>) images.get(i)).get("tensor")));
                float[] emb = fake.encodeImage(x, bundle.imageSize);  // the app's path: tensor -> encoder -> scores
                List<ZeroShot.Match> got = ZeroShot.topK(emb, labels.names.get(lang), labels.matrix.get(lang), bundle.logitScale, 5);
                int[] gotIdx = new int[got.size()];
                for (int k = 0; k < gotIdx.length; k++) gotIdx[k] = got.get(k).index;
                assertArrayEquals(lang + " image " + i, Golden.ints(((List<?>) top.get(lang)).get(i)), gotIdx);
                double sum = 0;
                for (double v : Scoring.softmax(Scoring.cosines(emb, labels.matrix.get(lang), labels.names.get(lang).length), bundle.logitScale)) sum += v;
                assertEquals(1.0, sum, 1e-9);
                checked++;
            }
        }
        assertTrue(checked >= 8);
    }

    @Test
    public void exportLabelLayoutReadsLikeParity() throws Exception {
        LabelSet parityLabels = LabelSet.read(new BundleSource.Dir(parity), "parity.json", bundle.embedDim);
        assertTrue("the bundle's labels.json must load", bundle.labels != null);
        assertEquals(parityLabels.languages(), bundle.labels.languages());
        for (String lang : parityLabels.languages()) {
            assertArrayEquals(parityLabels.names.get(lang), bundle.labels.names.get(lang));
            assertArrayEquals(parityLabels.matrix.get(lang), bundle.labels.matrix.get(lang), 0f);
        }
    }

    @Test
    public void textsAreTokenizedAndEmbeddedThroughTheEncoder() {
        List<String> typed = new ArrayList<String>();
        for (Object o : (List<?>) p.get("texts")) typed.add((String) ((Map<?, ?>) o).get("text"));
        float[] rows = ZeroShot.embedTexts(bundle, fake, typed);  // fails if any ids differ from Python's
        assertEquals(typed.size() * bundle.embedDim, rows.length);
        for (int r = 0; r < typed.size(); r++) {
            double n = 0;
            for (int k = 0; k < bundle.embedDim; k++) n += rows[r * bundle.embedDim + k] * (double) rows[r * bundle.embedDim + k];
            float[] raw = fake.encodeText(bundle.tokenize(typed.get(r)));
            assertEquals(typed.get(r), Scoring.dot(raw, raw) > 0 ? 1.0 : 0.0, n, 1e-5);  // all-padding text: a zero vector
        }
    }
}
