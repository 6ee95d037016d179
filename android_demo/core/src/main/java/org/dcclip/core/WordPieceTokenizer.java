package org.dcclip.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The exported {@code tokenizer.json} (HF {@code tokenizers}: BertNormalizer, BertPreTokenizer, WordPiece) re-implemented
 * step by step, so the phone gets the ids Python trained with. Each step follows the Rust source of tokenizers 0.23:
 * <ol>
 *   <li>clean_text: drop U+0000, U+FFFD and "other" characters (Cc, Cf, Co, Cs; not \t \n \r), map whitespace to ' ';</li>
 *   <li>handle_chinese_chars: put spaces around CJK ideographs (the same eight ranges as Rust);</li>
 *   <li>strip_accents: NFD, then drop non-spacing marks (Mn);</li>
 *   <li>lowercase: per code point (Rust's {@code char::to_lowercase}: no Greek final-sigma context);</li>
 *   <li>split on whitespace, then isolate every punctuation character (ASCII punctuation or Unicode P*);</li>
 *   <li>WordPiece: greedy longest match, "##" continuations, a word longer than max_input_chars_per_word or with
 *       an unmatched piece becomes the unknown token;</li>
 *   <li>truncation and padding as the file (or the caller, for the model's fixed context length) says.</li>
 * </ol>
 * The character tables (what counts as control or punctuation, and what NFD + mark stripping + lowercasing make of
 * each code point) are those of tokenizers itself, generated into {@link UnicodeTables}, not the runtime's: Java's
 * Unicode version differs from tokenizers' and from one Android release to the next. Anything in the file this class
 * does not implement is an error, not a guess.
 */
public final class WordPieceTokenizer {
    private final Map<String, Integer> vocab;
    private final String unkToken;
    private final int unkId;
    private final String prefix;
    private final int maxInputCharsPerWord;
    private final boolean hasNormalizer;
    private final boolean cleanText, chineseChars, stripAccents, lowercase;
    private final boolean bertPreTokenizer;
    // From the file's "truncation" / "padding" (what Tokenizer.from_file(path).encode(text) applies).
    private final int truncMaxLength;   // -1: none
    private final boolean truncLeft;
    private final int padFixedLength;   // -1: not Fixed
    private final boolean padEnabled;
    private final boolean padLeft;
    private final int padMultipleOf;    // 0: none
    private final int padId;

    private WordPieceTokenizer(Map<String, Object> root) {
        Map<String, Object> model = Json.obj(root, "model");
        if (model == null || !"WordPiece".equals(model.get("type")))
            throw unsupported("model", model == null ? null : model.get("type"));
        Map<String, Object> v = Json.obj(model, "vocab");
        if (v == null) throw new IllegalArgumentException("tokenizer.json: model.vocab is missing");
        vocab = new HashMap<String, Integer>(v.size() * 2);
        for (Map.Entry<String, Object> e : v.entrySet()) vocab.put(e.getKey(), ((Number) e.getValue()).intValue());
        unkToken = (String) model.get("unk_token");
        Integer unk = vocab.get(unkToken);
        if (unk == null) throw new IllegalArgumentException("tokenizer.json: unk_token " + unkToken + " is not in the vocabulary");
        unkId = unk;
        Object p = model.get("continuing_subword_prefix");
        prefix = p == null ? "##" : (String) p;
        Object m = model.get("max_input_chars_per_word");
        maxInputCharsPerWord = m == null ? 100 : ((Number) m).intValue();

        Object added = root.get("added_tokens");
        if (added instanceof List && !((List<?>) added).isEmpty())
            throw new IllegalArgumentException("tokenizer.json: added_tokens are not supported by this tokenizer (the project exports none)");

        Map<String, Object> norm = Json.obj(root, "normalizer");
        if (root.get("normalizer") != null && (norm == null || !"BertNormalizer".equals(norm.get("type"))))
            throw unsupported("normalizer", norm == null ? root.get("normalizer") : norm.get("type"));
        hasNormalizer = norm != null;
        cleanText = norm != null && Boolean.TRUE.equals(norm.get("clean_text"));
        chineseChars = norm != null && Boolean.TRUE.equals(norm.get("handle_chinese_chars"));
        lowercase = norm != null && Boolean.TRUE.equals(norm.get("lowercase"));
        Object sa = norm == null ? null : norm.get("strip_accents");
        stripAccents = norm != null && (sa == null ? lowercase : Boolean.TRUE.equals(sa));
        if (stripAccents != lowercase)
            throw new IllegalArgumentException("tokenizer.json: BertNormalizer with strip_accents=" + stripAccents
                    + " and lowercase=" + lowercase + " is not supported (the exported tokenizer sets both)");

        Map<String, Object> pre = Json.obj(root, "pre_tokenizer");
        if (root.get("pre_tokenizer") != null && (pre == null || !"BertPreTokenizer".equals(pre.get("type"))))
            throw unsupported("pre_tokenizer", pre == null ? root.get("pre_tokenizer") : pre.get("type"));
        bertPreTokenizer = pre != null;
        if (root.get("post_processor") != null)
            throw unsupported("post_processor", Json.obj(root, "post_processor") == null ? "?" : Json.obj(root, "post_processor").get("type"));

        Map<String, Object> trunc = Json.obj(root, "truncation");
        truncMaxLength = trunc == null ? -1 : Json.getInt(trunc, "max_length", "tokenizer.json truncation");
        truncLeft = trunc != null && "Left".equals(trunc.get("direction"));
        Map<String, Object> pad = Json.obj(root, "padding");
        padEnabled = pad != null;
        int fixed = -1;
        if (pad != null) {
            Object strategy = pad.get("strategy");
            if (strategy instanceof Map) fixed = ((Number) ((Map<?, ?>) strategy).get("Fixed")).intValue();
            else if (!"BatchLongest".equals(strategy)) throw unsupported("padding strategy", strategy);
        }
        padFixedLength = fixed;
        padLeft = pad != null && "Left".equals(pad.get("direction"));
        Object mult = pad == null ? null : pad.get("pad_to_multiple_of");
        padMultipleOf = mult == null ? 0 : ((Number) mult).intValue();
        padId = pad == null ? 0 : ((Number) pad.get("pad_id")).intValue();
    }

    private static IllegalArgumentException unsupported(String what, Object type) {
        return new IllegalArgumentException("tokenizer.json: " + what + " " + type + " is not supported (expected the "
                + "BertNormalizer / BertPreTokenizer / WordPiece tokenizer that dcclip-compress exports)");
    }

    public static WordPieceTokenizer fromJson(String json) {
        return new WordPieceTokenizer(Json.parseObject(json));
    }

    public int vocabSize() {
        return vocab.size();
    }

    public Integer tokenToId(String token) {
        return vocab.get(token);
    }

    // ------------------------------------------------------------------------------------------ character classes

    /** Rust's char::is_whitespace (the Unicode White_Space property; stable since Unicode 4.1). */
    static boolean isWhitespace(int c) {
        return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680
                || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
    }

    /** tokenizers' is_control (Cc, Cf, Co, Cs in its tables, except \t \n \r), U+0000 and U+FFFD. */
    static boolean isControl(int c) {
        return Tables.in(Tables.CONTROL_LO, Tables.CONTROL_HI, c);
    }

    static boolean isChinese(int c) {
        return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF)
                || (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF)
                || (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
    }

    /** BertPreTokenizer's is_bert_punc: ASCII punctuation or a Unicode punctuation category (Pc Pd Ps Pe Pi Pf Po). */
    static boolean isPunctuation(int c) {
        return Tables.in(Tables.PUNCT_LO, Tables.PUNCT_HI, c);
    }

    /** strip_accents + lowercase of one code point: NFD, non-spacing marks dropped, lowercased. */
    static void fold(int c, StringBuilder out) {
        if (c >= 0xAC00 && c <= 0xD7A3) {  // Hangul syllable: canonical decomposition into conjoining jamo (Unicode 3.12)
            int s = c - 0xAC00;
            out.append((char) (0x1100 + s / 588)).append((char) (0x1161 + (s % 588) / 28));
            if (s % 28 != 0) out.append((char) (0x11A7 + s % 28));
            return;
        }
        int[] m = Tables.MAP.get(c);
        if (m == null) out.appendCodePoint(c);
        else for (int d : m) out.appendCodePoint(d);
    }

    // ------------------------------------------------------------------------------------------ pipeline

    /** The BertNormalizer step (what tokenizers' normalize_str returns). */
    public String normalize(String text) {
        if (!hasNormalizer) return text;
        StringBuilder b = new StringBuilder(text.length() + 8);
        for (int k = 0; k < text.length(); ) {
            int c = text.codePointAt(k);
            k += Character.charCount(c);
            if (cleanText) {
                if (c == 0 || c == 0xFFFD || isControl(c)) continue;
                if (isWhitespace(c)) c = ' ';
            }
            if (chineseChars && isChinese(c)) b.append(' ').appendCodePoint(c).append(' ');
            else b.appendCodePoint(c);
        }
        if (!stripAccents) return b.toString();
        // Per code point: NFD never composes, so it distributes over concatenation. (Canonical reordering of combining
        // marks is not reproduced; the marks it moves are non-spacing ones, which are dropped anyway.)
        String s = b.toString();
        b.setLength(0);
        for (int k = 0; k < s.length(); ) {
            int c = s.codePointAt(k);
            k += Character.charCount(c);
            fold(c, b);
        }
        return b.toString();
    }

    /** The BertPreTokenizer step: words, with every punctuation character a word of its own. */
    public List<String> preTokenize(String normalized) {
        List<String> words = new ArrayList<String>();
        if (!bertPreTokenizer) {
            if (!normalized.isEmpty()) words.add(normalized);
            return words;
        }
        StringBuilder cur = new StringBuilder();
        for (int k = 0; k < normalized.length(); ) {
            int c = normalized.codePointAt(k);
            k += Character.charCount(c);
            if (isWhitespace(c)) {
                flush(cur, words);
            } else if (isPunctuation(c)) {
                flush(cur, words);
                words.add(new String(Character.toChars(c)));
            } else {
                cur.appendCodePoint(c);
            }
        }
        flush(cur, words);
        return words;
    }

    private static void flush(StringBuilder cur, List<String> words) {
        if (cur.length() > 0) {
            words.add(cur.toString());
            cur.setLength(0);
        }
    }

    /** The WordPiece model on one word: greedy longest match from the left. */
    public void wordPiece(String word, List<Integer> out) {
        int n = word.codePointCount(0, word.length());
        if (n > maxInputCharsPerWord) {
            out.add(unkId);
            return;
        }
        int mark = out.size();
        int start = 0;
        while (start < word.length()) {
            int end = longestPiece(word, start);
            if (end < 0) {
                while (out.size() > mark) out.remove(out.size() - 1);
                out.add(unkId);
                return;
            }
            out.add(vocab.get(piece(word, start, end)));
            start = end;
        }
    }

    /** The end of the longest vocabulary piece starting at {@code start} of {@code word} (with the continuation
     * prefix after the first piece), or -1 when none starts there: WordPiece's greedy step. */
    private int longestPiece(String word, int start) {
        for (int end = word.length(); start < end; end = word.offsetByCodePoints(end, -1)) {
            if (vocab.containsKey(piece(word, start, end))) return end;
        }
        return -1;
    }

    private String piece(String word, int start, int end) {
        String sub = word.substring(start, end);
        return start > 0 ? prefix + sub : sub;
    }

    /** Ids before truncation and padding. */
    public int[] encodeRaw(String text) {
        List<Integer> ids = new ArrayList<Integer>();
        for (String w : preTokenize(normalize(text))) wordPiece(w, ids);
        int[] a = new int[ids.size()];
        for (int k = 0; k < a.length; k++) a[k] = ids.get(k);
        return a;
    }

    /** The id of the unknown token ([UNK]). */
    public int unknownId() {
        return unkId;
    }

    /**
     * What of {@code text} WordPiece turns into the unknown token, after normalisation (lower-cased, accents stripped),
     * each once, in order: the character where the greedy match gets stuck (no vocabulary piece starts with it there),
     * and the whole word for one longer than max_input_chars_per_word. Empty exactly when {@link #encodeRaw} holds no
     * unknown id. The app shows these under a typed label: the model cannot read them.
     */
    public List<String> unknownCharacters(String text) {
        java.util.LinkedHashSet<String> out = new java.util.LinkedHashSet<String>();
        for (String word : preTokenize(normalize(text))) {
            if (word.codePointCount(0, word.length()) > maxInputCharsPerWord) {
                out.add(word);
                continue;
            }
            int start = 0;
            while (start < word.length()) {  // the same greedy longest match as wordPiece
                int end = longestPiece(word, start);
                if (end < 0) {  // stuck here: this character is the culprit; look on after it
                    int next = word.offsetByCodePoints(start, 1);
                    out.add(word.substring(start, next));
                    start = next;
                } else {
                    start = end;
                }
            }
        }
        return new ArrayList<String>(out);
    }

    /** What {@code tokenizers.Tokenizer.from_file(path).encode(text).ids} gives: the file's truncation and padding. */
    public int[] encode(String text) {
        int[] ids = encodeRaw(text);
        if (truncMaxLength >= 0 && ids.length > truncMaxLength)
            ids = truncLeft ? Arrays.copyOfRange(ids, ids.length - truncMaxLength, ids.length) : Arrays.copyOf(ids, truncMaxLength);
        if (padEnabled) {
            int target = padFixedLength >= 0 ? padFixedLength : ids.length;
            if (padMultipleOf > 0 && target % padMultipleOf != 0) target += padMultipleOf - target % padMultipleOf;
            if (ids.length < target) ids = pad(ids, target, padId, padLeft);
        }
        return ids;
    }

    /** The text encoder's input: truncated (right) and padded (right) to exactly contextLength with padId,
     *  as compress/tokenizer.py's BilingualTokenizer does for the exported model. */
    public long[] encodeFixed(String text, int contextLength, int padId) {
        int[] ids = encodeRaw(text);
        long[] out = new long[contextLength];
        Arrays.fill(out, padId);
        for (int k = 0; k < Math.min(contextLength, ids.length); k++) out[k] = ids[k];
        return out;
    }

    private static int[] pad(int[] ids, int target, int id, boolean left) {
        int[] out = new int[target];
        Arrays.fill(out, id);
        System.arraycopy(ids, 0, out, left ? target - ids.length : 0, ids.length);
        return out;
    }
}
