package org.dcclip.core;

import java.util.ArrayList;
import java.util.List;

/** Scores an image embedding against label embeddings: cosine, softmax(logit_scale * cosine), top-k. */
public final class ZeroShot {
    public static final class Match {
        public final int index;
        public final String label;
        public final double cosine, probability;

        Match(int index, String label, double cosine, double probability) {
            this.index = index;
            this.label = label;
            this.cosine = cosine;
            this.probability = probability;
        }

        @Override
        public String toString() {
            return String.format("%s %.1f%%", label, 100 * probability);
        }
    }

    private ZeroShot() {}

    /** rows: row-major (names.length, dim), L2-normalised. */
    public static List<Match> topK(float[] imageEmbedding, String[] names, float[] rows, double logitScale, int k) {
        double[] cos = Scoring.cosines(imageEmbedding, rows, names.length);
        double[] prob = Scoring.softmax(cos, logitScale);
        List<Match> out = new ArrayList<Match>();
        for (int i : Scoring.topK(cos, k)) out.add(new Match(i, names[i], cos[i], prob[i]));
        return out;
    }

    /**
     * The language of a typed label: zh when it holds a CJK ideograph of any block (basic, extension A, the
     * supplementary planes' B to G, compatibility), else en, as compress/prompts.py caption_lang decides.
     */
    public static String language(String label) {
        for (int k = 0; k < label.length(); ) {
            int c = label.codePointAt(k);
            if ((c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x3134F)
                    || (c >= 0xF900 && c <= 0xFAFF)) return "zh";
            k += Character.charCount(c);
        }
        return "en";
    }

    /** Python's template.format(label) for a template with "{}" (and "{{" / "}}" for literal braces). */
    public static String format(String template, String label) {
        StringBuilder out = new StringBuilder(template.length() + label.length());
        for (int k = 0; k < template.length(); k++) {
            char c = template.charAt(k);
            char next = k + 1 < template.length() ? template.charAt(k + 1) : 0;
            if (c == '{' && next == '}') {
                out.append(label);
                k++;
            } else if ((c == '{' && next == '{') || (c == '}' && next == '}')) {
                out.append(c);
                k++;
            } else {
                out.append(c);
            }
        }
        return out.toString();
    }

    /** The prompts a typed label is embedded through: each template of its language (else "{}") around it. */
    public static List<String> prompts(Bundle bundle, String label) {
        List<String> out = new ArrayList<String>();
        for (String t : bundle.templatesFor(language(label))) out.add(format(t, label));
        return out;
    }

    /**
     * Embeds labels typed on the phone as the bundle's own label embeddings were made (mobile_export/bundle/labels.py
     * embed_rows): each prompt of {@link #prompts} through the text encoder and L2-normalised, their mean L2-normalised
     * (one template: that embedding). Rows in order, row-major (labels, embed_dim).
     */
    public static float[] embedLabels(Bundle bundle, Encoder encoder, List<String> labels) {
        float[] rows = new float[labels.size() * bundle.embedDim];
        for (int r = 0; r < labels.size(); r++) {
            List<String> ps = prompts(bundle, labels.get(r));
            double[] sum = new double[bundle.embedDim];
            for (String prompt : ps) {
                float[] e = embed(bundle, encoder, prompt);
                for (int k = 0; k < e.length; k++) sum[k] += e[k];
            }
            float[] mean = new float[bundle.embedDim];
            for (int k = 0; k < mean.length; k++) mean[k] = (float) (sum[k] / ps.size());
            System.arraycopy(ps.size() == 1 ? mean : Scoring.l2Normalize(mean), 0, rows, r * bundle.embedDim, bundle.embedDim);
        }
        return rows;
    }

    /** Embeds texts as they are, no template: tokenize, encode, L2-normalise; rows in order. */
    public static float[] embedTexts(Bundle bundle, Encoder encoder, List<String> texts) {
        float[] rows = new float[texts.size() * bundle.embedDim];
        for (int r = 0; r < texts.size(); r++) System.arraycopy(embed(bundle, encoder, texts.get(r)), 0, rows, r * bundle.embedDim, bundle.embedDim);
        return rows;
    }

    private static float[] embed(Bundle bundle, Encoder encoder, String text) {
        float[] e = Scoring.l2Normalize(encoder.encodeText(bundle.tokenize(text)));
        if (e.length != bundle.embedDim)
            throw new IllegalStateException("text encoder returned " + e.length + " values, bundle says embed_dim " + bundle.embedDim);
        return e;
    }

    /**
     * A note for the screen when the tokenizer maps part of a typed label to [UNK] (the model cannot read it, so the
     * label is scored on the rest of its name), else null: one line per such label, the unknown characters quoted.
     */
    public static String unknownNote(Bundle bundle, List<String> labels) {
        StringBuilder out = new StringBuilder();
        for (String label : labels) {
            List<String> unk = bundle.tokenizer.unknownCharacters(label);
            if (unk.isEmpty()) continue;
            StringBuilder chars = new StringBuilder();
            for (String u : unk) chars.append(chars.length() == 0 ? "" : " ").append('\u201c').append(u).append('\u201d');
            out.append(out.length() == 0 ? "" : "\n").append("note: \u201c").append(label).append("\u201d: ").append(chars)
                    .append(" \u2192 [UNK], unknown to this model's tokenizer (not read)");
        }
        return out.length() == 0 ? null : out.toString();
    }
}
