package org.dcclip.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.BeforeClass;
import org.junit.Test;

/** Java ids == HF tokenizers ids, string by string, as Python wrote them into tokens.json. */
public class TokenizerParityTest {
    private static WordPieceTokenizer tok;
    private static Map<String, Object> golden;

    @BeforeClass
    public static void load() throws Exception {
        tok = Golden.tokenizer();
        golden = Golden.json("tokens.json");
    }

    /** Every mismatch listed (up to 20), not only the first. */
    private static void check(String group, boolean fixed) {
        @SuppressWarnings("unchecked")
        Map<String, Object> g = (Map<String, Object>) golden.get(group);
        List<?> strings = (List<?>) g.get("strings");
        List<?> ids = (List<?>) g.get(fixed ? "fixed" : "ids");
        int context = ((Number) golden.get("context_length")).intValue(), pad = ((Number) golden.get("pad_id")).intValue();
        List<String> bad = new ArrayList<String>();
        for (int k = 0; k < strings.size(); k++) {
            String s = (String) strings.get(k);
            int[] want = Golden.ints(ids.get(k));
            int[] got;
            if (fixed) {
                long[] l = tok.encodeFixed(s, context, pad);
                got = new int[l.length];
                for (int j = 0; j < l.length; j++) got[j] = (int) l[j];
            } else {
                got = tok.encode(s);
            }
            if (!java.util.Arrays.equals(want, got) && bad.size() < 20)
                bad.add(Json.write(s) + ": python " + Json.write(want) + " java " + Json.write(got));
        }
        if (!bad.isEmpty()) fail(group + ": " + bad.size() + "+ mismatches\n" + String.join("\n", bad));
    }

    @Test
    public void emojiNamesAndPromptsEnglish() {
        check("emoji_en", false);
        check("emoji_en", true);
        assertTrue(((List<?>) ((Map<?, ?>) golden.get("emoji_en")).get("strings")).size() > 1000);
    }

    @Test
    public void emojiNamesAndPromptsChinese() {
        check("emoji_zh", false);
        check("emoji_zh", true);
        assertTrue(((List<?>) ((Map<?, ?>) golden.get("emoji_zh")).get("strings")).size() > 1000);
    }

    @Test
    public void hardStrings() {
        check("hard", false);
        check("hard", true);
        assertTrue(((List<?>) ((Map<?, ?>) golden.get("hard")).get("strings")).size() >= 200);
    }

    @Test
    public void parityStringsOfTheBundle() throws Exception {
        Map<String, Object> p = Json.parseObject(Golden.text(Golden.file("bundle/parity/parity.json")));
        int context = ((Number) p.get("context_length")).intValue(), pad = ((Number) p.get("pad_id")).intValue();
        for (Object o : (List<?>) p.get("texts")) {
            Map<?, ?> t = (Map<?, ?>) o;
            long[] got = tok.encodeFixed((String) t.get("text"), context, pad);
            int[] want = Golden.ints(t.get("ids"));
            long[] w = new long[want.length];
            for (int k = 0; k < w.length; k++) w[k] = want[k];
            assertArrayEquals((String) t.get("text"), w, got);
        }
    }

    @Test
    public void fileTruncationAndPaddingAreHonoured() {
        String json = Golden.file("tokenizer.json").getPath();
        Map<String, Object> root;
        try {
            root = Json.parseObject(Golden.text(Golden.file("tokenizer_padded.json")));
        } catch (Exception e) {
            throw new AssertionError(e);
        }
        WordPieceTokenizer padded = WordPieceTokenizer.fromJson(Json.write(root));
        @SuppressWarnings("unchecked")
        Map<String, Object> g = (Map<String, Object>) golden.get("padded");
        List<?> strings = (List<?>) g.get("strings");
        for (int k = 0; k < strings.size(); k++)
            assertArrayEquals(json, Golden.ints(((List<?>) g.get("ids")).get(k)), padded.encode((String) strings.get(k)));
    }

    @Test
    public void unsupportedTokenizerIsAnErrorNotAGuess() throws Exception {
        Map<String, Object> root = Json.parseObject(Golden.text(Golden.file("tokenizer.json")));
        root.put("post_processor", Json.parseObject("{\"type\": \"BertProcessing\"}"));
        try {
            WordPieceTokenizer.fromJson(Json.write(root));
            fail("a post_processor must be rejected");
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("post_processor"));
        }
    }

    @Test
    public void greekFinalSigmaAndDottedIAreLowercasedPerCodePoint() {
        assertEquals("σασ i", tok.normalize("ΣΑΣ İ"));
    }
}
