package org.dcclip.core;

/**
 * Zero-shot arithmetic, in double: L2 normalisation, cosine, softmax over logit_scale * cosine, and top-k with
 * compress/metrics.py's tie rule (highest score first; exactly equal scores in index order, lowest first).
 */
public final class Scoring {
    private Scoring() {}

    /** x / max(||x||, 1e-12), as torch.nn.functional.normalize. */
    public static float[] l2Normalize(float[] x) {
        double n = 0;
        for (float v : x) n += (double) v * v;
        n = Math.max(Math.sqrt(n), 1e-12);
        float[] out = new float[x.length];
        for (int k = 0; k < x.length; k++) out[k] = (float) (x[k] / n);
        return out;
    }

    public static double dot(float[] a, float[] b) {
        if (a.length != b.length) throw new IllegalArgumentException("dot: lengths " + a.length + " and " + b.length);
        double s = 0;
        for (int k = 0; k < a.length; k++) s += (double) a[k] * b[k];
        return s;
    }

    public static double cosine(float[] a, float[] b) {
        double na = Math.sqrt(dot(a, a)), nb = Math.sqrt(dot(b, b));
        return dot(a, b) / (Math.max(na, 1e-12) * Math.max(nb, 1e-12));
    }

    /** Cosine of one embedding against each row of a row-major (n, dim) matrix of L2-normalised embeddings. */
    public static double[] cosines(float[] query, float[] matrix, int n) {
        int dim = query.length;
        if (matrix.length != n * dim) throw new IllegalArgumentException("cosines: " + matrix.length + " values for " + n + " x " + dim);
        float[] q = l2Normalize(query);
        double[] out = new double[n];
        for (int r = 0; r < n; r++) {
            double s = 0;
            for (int k = 0; k < dim; k++) s += (double) q[k] * matrix[r * dim + k];
            out[r] = s;
        }
        return out;
    }

    /** softmax(scale * x), shifted by the maximum for stability. */
    public static double[] softmax(double[] x, double scale) {
        double max = Double.NEGATIVE_INFINITY;
        for (double v : x) max = Math.max(max, scale * v);
        double sum = 0;
        double[] out = new double[x.length];
        for (int k = 0; k < x.length; k++) {
            out[k] = Math.exp(scale * x[k] - max);
            sum += out[k];
        }
        for (int k = 0; k < x.length; k++) out[k] /= sum;
        return out;
    }

    /** Indices of the k best scores under the tie rule; k is capped at scores.length. */
    public static int[] topK(double[] scores, int k) {
        int n = Math.min(k, scores.length);
        int[] best = new int[n];
        boolean[] taken = new boolean[scores.length];
        for (int r = 0; r < n; r++) {
            int arg = -1;
            for (int i = 0; i < scores.length; i++) {
                if (taken[i]) continue;
                if (arg < 0 || scores[i] > scores[arg] || (Double.isNaN(scores[arg]) && !Double.isNaN(scores[i]))) arg = i;
            }
            taken[arg] = true;
            best[r] = arg;
        }
        return best;
    }
}
