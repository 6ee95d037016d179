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

    /** Embeds user-typed labels on the device: tokenize, encode, L2-normalise; rows in order. */
    public static float[] embedLabels(Bundle bundle, Encoder encoder, List<String> labels) {
        float[] rows = new float[labels.size() * bundle.embedDim];
        for (int r = 0; r < labels.size(); r++) {
            float[] e = Scoring.l2Normalize(encoder.encodeText(bundle.tokenize(labels.get(r))));
            if (e.length != bundle.embedDim)
                throw new IllegalStateException("text encoder returned " + e.length + " values, bundle says embed_dim " + bundle.embedDim);
            System.arraycopy(e, 0, rows, r * bundle.embedDim, bundle.embedDim);
        }
        return rows;
    }
}
