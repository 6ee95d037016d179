package org.dcclip.core;

import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * The image side of the bundle's contract, without android.*: ARGB pixels (Android's Bitmap.getPixels layout,
 * 0xAARRGGBB, row-major) -> float32 RGB in [0, 1], NCHW (1, 3, S, S), which is what the exported image tower takes
 * (its normalisation is inside the model).
 *
 * Steps, each matching mobile_export/parity.py's Python reference to float rounding:
 * <ol>
 *   <li>alpha composited over white (opaque photos are unchanged);</li>
 *   <li>centre crop of the largest square (left = (w - m) / 2, top = (h - m) / 2, m = min(w, h));</li>
 *   <li>resize m x m -> S x S with antialiased bilinear filtering exactly as
 *       {@code torch.nn.functional.interpolate(mode="bilinear", antialias=True, align_corners=False)} computes its
 *       weights (a triangle filter widened by the scale when shrinking), no rounding to 8 bits in between;</li>
 *   <li>divided by 255, then (value - mean) / std per channel if the bundle asks for it (default mean 0, std 1).</li>
 * </ol>
 */
public final class ImagePreprocessor {
    public final int size;
    private final double[] mean;
    private final double[] std;

    public ImagePreprocessor(int size, double[] mean, double[] std) {
        if (size < 1) throw new IllegalArgumentException("preprocess: image size must be >= 1, got " + size);
        this.size = size;
        this.mean = mean.clone();
        this.std = std.clone();
    }

    public ImagePreprocessor(int size) {
        this(size, new double[] {0, 0, 0}, new double[] {1, 1, 1});
    }

    /**
     * From bundle.json (image_size) and, when the bundle has one, preprocess.json. Keys this class does not implement
     * with a value other than what it does are an error naming the key: a silent mismatch is the bug this guards.
     */
    @SuppressWarnings("unchecked")
    public static ImagePreprocessor fromBundle(Map<String, Object> bundle, Map<String, Object> preprocess) {
        int size = Json.getInt(bundle, "image_size", "bundle.json");
        double[] mean = {0, 0, 0}, std = {1, 1, 1};
        Map<String, Object> p = preprocess == null ? null : (Json.obj(preprocess, "image") != null ? Json.obj(preprocess, "image") : preprocess);
        if (p != null) {
            if (p.get("shape") instanceof List) size = ((Number) ((List<?>) p.get("shape")).get(3)).intValue();
            for (String key : new String[] {"size", "image_size"}) {
                if (p.get(key) instanceof Number) size = Json.getInt(p, key, "preprocess.json");
            }
            expect(p, "channel_order", "RGB");
            expect(p, "layout", "NCHW");
            expect(p, "dtype", "float32");
            Map<String, Object> crop = Json.obj(p, "crop");
            expect(crop != null ? crop : p, crop != null ? "mode" : "crop", "center");
            Map<String, Object> resize = Json.obj(p, "resize");
            Map<String, Object> r = resize != null ? resize : p;
            expect(r, "filter", "bilinear");
            expect(p, "resize", "bilinear");
            expect(p, "resize_filter", "bilinear");
            expect(p, "interpolation", "bilinear");
            if (Boolean.FALSE.equals(r.get("antialias")))
                throw new IllegalArgumentException("preprocess.json: antialias=false is not implemented (the app filters like torch's antialias=True)");
            Object range = p.get("value_range");
            if (range instanceof List) {
                List<?> v = (List<?>) range;
                if (v.size() != 2 || ((Number) v.get(0)).doubleValue() != 0.0 || ((Number) v.get(1)).doubleValue() != 1.0)
                    throw new IllegalArgumentException("preprocess.json: value_range " + range + " is not implemented (only [0, 1])");
            }
            Map<String, Object> norm = Json.obj(p, "normalization");
            Map<String, Object> n = norm != null ? norm : p;
            boolean inside = norm != null && Boolean.TRUE.equals(norm.get("inside_model"));
            if (!inside && n.get("mean") instanceof List) mean = triple(n.get("mean"), "mean");
            if (!inside && n.get("std") instanceof List) std = triple(n.get("std"), "std");
        }
        return new ImagePreprocessor(size, mean, std);
    }

    private static void expect(Map<String, Object> m, String key, String value) {
        Object v = m.get(key);
        if (v instanceof String && !value.equalsIgnoreCase((String) v))
            throw new IllegalArgumentException("preprocess.json: " + key + "=" + v + " is not implemented by the app (it does " + value + ")");
    }

    private static double[] triple(Object v, String key) {
        List<?> l = (List<?>) v;
        if (l.size() != 3) throw new IllegalArgumentException("preprocess.json: " + key + " must have 3 values");
        return new double[] {((Number) l.get(0)).doubleValue(), ((Number) l.get(1)).doubleValue(), ((Number) l.get(2)).doubleValue()};
    }

    /** ARGB pixels (width x height) -> float32 NCHW, length 3 * size * size. */
    public float[] apply(int[] argb, int width, int height) {
        if (width < 1 || height < 1 || argb.length < width * height)
            throw new IllegalArgumentException("preprocess: " + argb.length + " pixels for a " + width + "x" + height + " image");
        int m = Math.min(width, height);
        int left = (width - m) / 2, top = (height - m) / 2;
        double[][] planes = new double[3][m * m];
        for (int y = 0; y < m; y++) {
            for (int x = 0; x < m; x++) {
                int p = argb[(top + y) * width + left + x];
                int a = (p >>> 24) & 0xFF;
                for (int c = 0; c < 3; c++) {
                    double v = (p >>> (16 - 8 * c)) & 0xFF;
                    if (a != 255) v = (v * a + 255.0 * (255 - a)) / 255.0;
                    planes[c][y * m + x] = v;
                }
            }
        }
        Weights w = new Weights(m, size);
        float[] out = new float[3 * size * size];
        double[] rows = new double[m * size];
        for (int c = 0; c < 3; c++) {
            double[] src = planes[c];
            for (int y = 0; y < m; y++) {  // horizontal pass: m x m -> m x size
                for (int x = 0; x < size; x++) {
                    double acc = 0;
                    for (int j = 0; j < w.count[x]; j++) acc += w.weight[x][j] * src[y * m + w.first[x] + j];
                    rows[y * size + x] = acc;
                }
            }
            for (int y = 0; y < size; y++) {  // vertical pass: m x size -> size x size
                for (int x = 0; x < size; x++) {
                    double acc = 0;
                    for (int j = 0; j < w.count[y]; j++) acc += w.weight[y][j] * rows[(w.first[y] + j) * size + x];
                    out[c * size * size + y * size + x] = (float) ((acc / 255.0 - mean[c]) / std[c]);
                }
            }
        }
        return out;
    }

    /** torch's _compute_indices_min_size_weights_aa for the bilinear (triangle) filter, align_corners=False. */
    static final class Weights {
        final int[] first, count;
        final double[][] weight;

        Weights(int in, int out) {
            double scale = (double) in / out;
            double support = scale >= 1.0 ? scale : 1.0;
            double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
            first = new int[out];
            count = new int[out];
            weight = new double[out][];
            for (int i = 0; i < out; i++) {
                double center = scale * (i + 0.5);
                int xmin = (int) Math.max((long) (center - support + 0.5), 0L);
                int xsize = (int) (Math.min((long) (center + support + 0.5), (long) in) - xmin);
                double[] wt = new double[Math.max(xsize, 0)];
                double total = 0;
                for (int j = 0; j < xsize; j++) {
                    double x = Math.abs((j + xmin - center + 0.5) * invscale);
                    wt[j] = x < 1.0 ? 1.0 - x : 0.0;
                    total += wt[j];
                }
                if (total != 0) for (int j = 0; j < xsize; j++) wt[j] /= total;
                first[i] = xmin;
                count[i] = Math.max(xsize, 0);
                weight[i] = wt;
            }
        }
    }

    @Override
    public String toString() {
        return "ImagePreprocessor(size=" + size + ", mean=" + Arrays.toString(mean) + ", std=" + Arrays.toString(std) + ")";
    }
}
