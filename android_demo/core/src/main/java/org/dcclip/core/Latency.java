package org.dcclip.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Benchmark numbers with the field names of `dcclip-compress bench` (mobile_export/bench.py summarize_latencies, which
 * follows ExecuTorch's minibench): load time, mean, trimmed mean over the middle 80%, median, p90 (linear
 * interpolation, numpy's default), runs.
 */
public final class Latency {
    private Latency() {}

    public static Map<String, Object> summarize(double[] latenciesMs, double loadMs) {
        double[] s = latenciesMs.clone();
        Arrays.sort(s);
        int n = s.length;
        double[] trimmed = Arrays.copyOfRange(s, n / 10, n * 9 / 10);
        if (trimmed.length == 0) trimmed = s;
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        out.put("model_load_time(ms)", loadMs);
        out.put("avg_inference_latency(ms)", mean(s));
        out.put("trimmean_inference_latency(ms)", mean(trimmed));
        out.put("median_inference_latency(ms)", n == 0 ? Double.NaN : n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2);
        out.put("p90_inference_latency(ms)", percentile(s, 0.9));
        out.put("runs", (long) n);
        return out;
    }

    /** Linear-interpolated percentile of sorted values, as mobile_export/bench.py's percentile. */
    public static double percentile(double[] sorted, double q) {
        if (sorted.length == 0) return Double.NaN;
        if (sorted.length == 1) return sorted[0];
        double pos = (sorted.length - 1) * q;
        int lo = (int) pos;
        int hi = Math.min(lo + 1, sorted.length - 1);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }

    private static double mean(double[] a) {
        double t = 0;
        for (double v : a) t += v;
        return a.length == 0 ? Double.NaN : t / a.length;
    }

    /**
     * minibench's results layout (a JSON list of {benchmarkModel, metric, actualValue, targetValue, deviceInfo}), one
     * entry per metric, so mobile_export/device.py's parse_minibench_results reads the app's file like minibench's.
     */
    public static String minibenchJson(String model, String backend, String quant, Map<String, Object> metrics,
                                       Map<String, Object> deviceInfo) {
        List<Object> entries = new ArrayList<Object>();
        Map<String, Object> bm = new LinkedHashMap<String, Object>();
        bm.put("name", model);
        bm.put("backend", backend);
        bm.put("quantization", quant);
        for (Map.Entry<String, Object> e : metrics.entrySet()) {
            if (!(e.getValue() instanceof Number)) continue;
            Map<String, Object> m = new LinkedHashMap<String, Object>();
            m.put("benchmarkModel", bm);
            m.put("metric", e.getKey());
            m.put("actualValue", ((Number) e.getValue()).doubleValue());
            m.put("targetValue", 0.0);
            m.put("deviceInfo", deviceInfo);
            entries.add(m);
        }
        return Json.write(entries);
    }
}
