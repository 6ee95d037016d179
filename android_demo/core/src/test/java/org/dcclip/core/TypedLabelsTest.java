package org.dcclip.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * Labels typed on the phone: wrapped in the bundle's templates of their language (falling back to prompt_templates,
 * then "{}"), embedded as the normalised mean of normalised template embeddings (Python's embed_rows, checked against
 * Python's numbers in golden typed.json), one-language labels in labels.json, and the [UNK] note.
 */
public class TypedLabelsTest {
    static final int DIM = 4;
    static final String TOKENIZER = "{\"model\": {\"type\": \"WordPiece\", \"unk_token\": \"[UNK]\", \"continuing_subword_prefix\": \"##\","
            + " \"max_input_chars_per_word\": 100, \"vocab\": {\"[UNK]\": 0, \"[PAD]\": 1, \"a\": 2, \"dog\": 3, \"of\": 4,"
            + " \"emoji\": 5, \"an\": 6, \"\u72d7\": 7, \"\u7684\": 8, \"\u56fe\": 9, \"\u7247\": 10, \"cat\": 11, \"photo\": 12, \"##s\": 13}},"
            + " \"normalizer\": {\"type\": \"BertNormalizer\", \"clean_text\": true, \"handle_chinese_chars\": true,"
            + " \"strip_accents\": null, \"lowercase\": true}, \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}}";

    /** A bundle folder with bundle.json (extra keys spliced in), tokenizer.json and, when given, labels.json. */
    static Bundle bundle(String extra, String labelsJson, float[] labelRows) throws IOException {
        File dir = java.nio.file.Files.createTempDirectory("typed-labels").toFile();
        write(new File(dir, "bundle.json"), "{\"image_size\": 32, \"context_length\": 8, \"pad_id\": 1, \"embed_dim\": " + DIM
                + ", \"logit_scale\": 100.0, \"files\": {\"int8\": {\"image\": \"image_int8.pte\", \"text\": \"text_int8.pte\"}}"
                + (extra.isEmpty() ? "" : ", " + extra) + "}");
        write(new File(dir, "tokenizer.json"), TOKENIZER);
        if (labelsJson != null) {
            write(new File(dir, "labels.json"), labelsJson);
            ByteBuffer b = ByteBuffer.allocate(4 * labelRows.length).order(ByteOrder.LITTLE_ENDIAN);
            for (float f : labelRows) b.putFloat(f);
            FileOutputStream o = new FileOutputStream(new File(dir, "label_embeddings_int8.f32"));
            o.write(b.array());
            o.close();
        }
        return new Bundle(new BundleSource.Dir(dir));
    }

    static void write(File f, String text) throws IOException {
        FileOutputStream o = new FileOutputStream(f);
        o.write(text.getBytes("UTF-8"));
        o.close();
    }

    /** A deterministic stand-in for the text tower: a different vector for every id sequence; records the calls. */
    static final class HashEncoder implements Encoder {
        final List<String> calls = new ArrayList<String>();

        @Override
        public float[] encodeImage(float[] pixels, int size) {
            throw new AssertionError("not used");
        }

        @Override
        public float[] encodeText(long[] ids) {
            calls.add(Arrays.toString(ids));
            float[] e = new float[DIM];
            for (int k = 0; k < DIM; k++)
                for (int j = 0; j < ids.length; j++) e[k] += (float) Math.sin(0.7 * ids[j] * (k + 1) + j);
            return e;
        }

        @Override
        public void close() {}
    }

    @Test
    public void typedLabelsGoThroughTheTemplatesOfTheirLanguage() throws Exception {
        Bundle b = bundle("\"prompt_templates\": {\"en\": \"an emoji of {}\", \"zh\": \"{}\u7684\u8868\u60c5\"},"
                + " \"templates\": {\"en\": [\"{}\", \"a photo of {}\"], \"zh\": [\"{}\u7684\u56fe\u7247\"]}", null, null);
        assertEquals(Arrays.asList("dog", "a photo of dog"), ZeroShot.prompts(b, "dog"));
        assertEquals(Arrays.asList("\u72d7\u7684\u56fe\u7247"), ZeroShot.prompts(b, "\u72d7"));
        assertEquals("zh", ZeroShot.language("hot \u72d7"));  // a CJK ideograph makes it Chinese, as caption_lang
        assertEquals("en", ZeroShot.language("caf\u00e9 \u3053\u3093"));  // kana is not an ideograph
        assertEquals("{x} dog", ZeroShot.format("{{x}} {}", "dog"));
    }

    @Test
    public void templatesFallBackToPromptTemplatesThenToTheBareLabel() throws Exception {
        Bundle only = bundle("\"prompt_templates\": {\"en\": \"an emoji of {}\", \"zh\": \"{}\u7684\u8868\u60c5\"}", null, null);
        assertEquals(Arrays.asList("an emoji of dog"), ZeroShot.prompts(only, "dog"));
        Bundle partial = bundle("\"prompt_templates\": {\"en\": \"an emoji of {}\", \"zh\": \"{}\u7684\u8868\u60c5\"},"
                + " \"templates\": {\"en\": [\"a photo of {}\"]}", null, null);
        assertEquals(Arrays.asList("a photo of dog"), ZeroShot.prompts(partial, "dog"));
        assertEquals(Arrays.asList("\u72d7\u7684\u8868\u60c5"), ZeroShot.prompts(partial, "\u72d7"));
        Bundle none = bundle("", null, null);
        assertEquals(Arrays.asList("dog"), ZeroShot.prompts(none, "dog"));
        try {
            bundle("\"templates\": {\"en\": [\"no slot\"]}", null, null);
            fail("a template without {} must not load");
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("no {}"));
        }
    }

    @Test
    public void labelsJsonTemplatesServeWhenBundleJsonHasNone() throws Exception {
        String labels = "{\"languages\": [\"en\", \"zh\"], \"templates\": {\"en\": [\"an icon of {}\"], \"zh\": [\"{}\"]},"
                + " \"labels\": [{\"en\": \"dog\", \"zh\": \"\u72d7\"}],"
                + " \"embeddings\": {\"int8\": {\"file\": \"label_embeddings_int8.f32\", \"shape\": [2, 1, 4]}}}";
        Bundle b = bundle("", labels, new float[] {1, 0, 0, 0, 0, 1, 0, 0});
        assertEquals(Arrays.asList("an icon of cat"), ZeroShot.prompts(b, "cat"));
    }

    @Test
    public void embeddingIsTheNormalisedMeanOfNormalisedTemplateEmbeddings() throws Exception {
        Bundle b = bundle("\"templates\": {\"en\": [\"{}\", \"a photo of {}\", \"an emoji of {}\"], \"zh\": [\"{}\u7684\u56fe\u7247\"]}", null, null);
        HashEncoder enc = new HashEncoder();
        float[] rows = ZeroShot.embedLabels(b, enc, Arrays.asList("dog", "\u72d7"));
        assertEquals(4, enc.calls.size());  // three en templates + one zh
        double[] want = new double[DIM];
        for (String p : new String[] {"dog", "a photo of dog", "an emoji of dog"}) {
            float[] e = Scoring.l2Normalize(enc.encodeText(b.tokenize(p)));
            for (int k = 0; k < DIM; k++) want[k] += e[k] / 3.0;
        }
        double n = 0;
        for (double v : want) n += v * v;
        for (int k = 0; k < DIM; k++) assertEquals(want[k] / Math.sqrt(n), rows[k], 1e-6);
        float[] zh = Scoring.l2Normalize(enc.encodeText(b.tokenize("\u72d7\u7684\u56fe\u7247")));
        assertArrayEquals(zh, Arrays.copyOfRange(rows, DIM, 2 * DIM), 1e-7f);
        // embedTexts: as typed, no template
        assertArrayEquals(Scoring.l2Normalize(enc.encodeText(b.tokenize("dog"))), ZeroShot.embedTexts(b, enc, Arrays.asList("dog")), 0f);
    }

    @Test
    public void oneLanguageLabelsShowTheirOneNameInBothLanguages() throws Exception {
        String labels = "{\"languages\": [\"en\", \"zh\"], \"labels\": [{\"en\": \"dog\", \"zh\": \"\u72d7\"}, {\"zh\": \"\u732b\"},"
                + " {\"en\": \"photo\"}], \"embeddings\": {\"int8\": {\"file\": \"label_embeddings_int8.f32\", \"shape\": [2, 3, 4]}}}";
        float[] rows = new float[2 * 3 * DIM];
        for (int r = 0; r < 6; r++) rows[r * DIM + r % DIM] = 1;
        Bundle b = bundle("", labels, rows);
        assertArrayEquals(new String[] {"dog", "\u732b", "photo"}, b.labels.names.get("en"));
        assertArrayEquals(new String[] {"\u72d7", "\u732b", "photo"}, b.labels.names.get("zh"));
        assertEquals(3 * DIM, b.labels.matrix.get("zh").length);
    }

    @Test
    public void unknownCharactersAreNamedAndNoted() throws Exception {
        Bundle b = bundle("", null, null);
        WordPieceTokenizer tok = b.tokenizer;
        assertEquals(new ArrayList<String>(), tok.unknownCharacters("a dog photos"));
        assertEquals(Arrays.asList("\u732b"), tok.unknownCharacters("\u72d7 \u732b"));     // one CJK character
        assertEquals(Arrays.asList("z", "\ud83d\udc36"), tok.unknownCharacters("dogz \ud83d\udc36"));  // stuck at 'z'; the emoji
        assertEquals(Arrays.asList("x"), tok.unknownCharacters("X"));                      // after lower-casing
        assertNull(ZeroShot.unknownNote(b, Arrays.asList("dog", "\u72d7")));
        String note = ZeroShot.unknownNote(b, Arrays.asList("dog", "\u732b\u732b dog"));
        assertTrue(note, note.contains("\u732b\u732b dog") && note.contains("\u201c\u732b\u201d") && note.contains("[UNK]"));
        assertEquals(1, note.split("\n").length);
    }

    /** Python (tests/test_android_core.py) embedded typed labels through the bundle's templates with the eager text
     *  tower; the same prompts through a fake encoder that returns Python's per-prompt embeddings give its rows. */
    @Test
    public void typedLabelEmbeddingsMatchPython() throws Exception {
        Map<String, Object> g = Golden.json("typed.json");
        Bundle b = new Bundle(new BundleSource.Dir(Golden.file("bundle")));
        final Map<String, float[]> byIds = new HashMap<String, float[]>();
        float[] raw = Golden.floats(Golden.file((String) g.get("prompt_embeddings")));
        List<?> prompts = (List<?>) g.get("prompts");
        for (int i = 0; i < prompts.size(); i++) {
            Map<?, ?> p = (Map<?, ?>) prompts.get(i);
            int[] ids = Golden.ints(p.get("ids"));
            long[] l = new long[ids.length];
            for (int k = 0; k < l.length; k++) l[k] = ids[k];
            assertArrayEquals("ids of " + p.get("text"), l, b.tokenize((String) p.get("text")));
            byIds.put(Arrays.toString(l), Arrays.copyOfRange(raw, i * b.embedDim, (i + 1) * b.embedDim));
        }
        Encoder python = new Encoder() {
            @Override
            public float[] encodeImage(float[] pixels, int size) {
                throw new AssertionError("not used");
            }

            @Override
            public float[] encodeText(long[] ids) {
                float[] e = byIds.get(Arrays.toString(ids));
                if (e == null) throw new AssertionError("Python embedded no prompt with ids " + Arrays.toString(ids));
                return e;
            }

            @Override
            public void close() {}
        };
        List<String> labels = new ArrayList<String>();
        for (Object o : (List<?>) g.get("labels")) labels.add((String) o);
        Map<?, ?> wantPrompts = (Map<?, ?>) g.get("label_prompts");
        for (String label : labels) assertEquals(label, wantPrompts.get(label), ZeroShot.prompts(b, label));
        float[] got = ZeroShot.embedLabels(b, python, labels);
        float[] want = Golden.floats(Golden.file((String) g.get("label_embeddings")));
        assertArrayEquals(want, got, 1e-5f);
        assertTrue(((List<?>) b.templatesFor("en")).size() > 1);  // the golden bundle has an ensemble
    }

    /** unknownCharacters is empty exactly when HF tokenizers' ids of the string hold [UNK] (golden tokens.json). */
    @Test
    public void unknownCharactersExactlyWhenPythonIdsHoldUnk() throws Exception {
        WordPieceTokenizer tok = Golden.tokenizer();
        Map<String, Object> golden = Golden.json("tokens.json");
        int unk = tok.unknownId(), withUnk = 0;
        List<String> bad = new ArrayList<String>();
        for (String group : new String[] {"hard", "emoji_en", "emoji_zh"}) {
            Map<?, ?> g = (Map<?, ?>) golden.get(group);
            List<?> strings = (List<?>) g.get("strings"), ids = (List<?>) g.get("ids");
            for (int k = 0; k < strings.size(); k++) {
                boolean python = false;
                for (int id : Golden.ints(ids.get(k))) python |= id == unk;
                List<String> java = tok.unknownCharacters((String) strings.get(k));
                withUnk += python ? 1 : 0;
                if (python == java.isEmpty() && bad.size() < 10) bad.add(Json.write(strings.get(k)) + ": java " + java);
            }
        }
        if (!bad.isEmpty()) fail(String.join("\n", bad));
        assertTrue("the golden strings must hold some [UNK]s", withUnk > 10);
    }
}
