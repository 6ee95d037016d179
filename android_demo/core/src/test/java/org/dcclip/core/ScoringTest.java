package org.dcclip.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.io.FileOutputStream;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

public class ScoringTest {
    @Test
    public void tiesGoToTheLowerIndexLikeComputeMetrics() {
        double[] s = {0.1, 0.5, 0.5, 0.9, 0.5, 0.9};
        assertArrayEquals(new int[] {3, 5, 1, 2, 4}, Scoring.topK(s, 5));
        assertArrayEquals(new int[] {3, 5}, Scoring.topK(s, 2));
        assertArrayEquals(new int[] {0}, Scoring.topK(new double[] {1.0}, 5));
    }

    @Test
    public void softmaxUsesTheLogitScale() {
        double[] p = Scoring.softmax(new double[] {0.0, Math.log(3) / 10}, 10.0);
        assertEquals(0.25, p[0], 1e-12);
        assertEquals(0.75, p[1], 1e-12);
    }

    @Test
    public void l2NormAndCosine() {
        float[] x = Scoring.l2Normalize(new float[] {3, 4});
        assertEquals(0.6f, x[0], 1e-7f);
        assertEquals(0.8f, x[1], 1e-7f);
        assertEquals(1.0, Scoring.cosine(new float[] {1, 1}, new float[] {2, 2}), 1e-12);
        assertEquals(0.0, Scoring.l2Normalize(new float[] {0, 0})[0], 0.0);
    }

    /** Same numbers as mobile_export/bench.py's summarize_latencies on the same input (Python wrote them). */
    @Test
    public void latencySummaryMatchesPythonAndWritesMinibenchJson() throws Exception {
        Map<String, Object> g = Golden.json("latency.json");
        List<?> ms = (List<?>) g.get("latencies");
        double[] lat = new double[ms.size()];
        for (int k = 0; k < lat.length; k++) lat[k] = ((Number) ms.get(k)).doubleValue();
        Map<String, Object> got = Latency.summarize(lat, ((Number) g.get("load_ms")).doubleValue());
        Map<?, ?> want = (Map<?, ?>) g.get("summary");
        assertEquals(want.keySet(), got.keySet());
        for (Object k : want.keySet())
            assertEquals(String.valueOf(k), ((Number) want.get(k)).doubleValue(), ((Number) got.get(k)).doubleValue(), 1e-9);
        Map<String, Object> device = new LinkedHashMap<String, Object>();
        device.put("device", "jvm");
        String json = Latency.minibenchJson("image_fp32", "xnnpack", "fp32", got, device);
        FileOutputStream out = new FileOutputStream(new File(Golden.dir(), "java_bench.json"));
        out.write(json.getBytes("UTF-8"));
        out.close();
        assertTrue(json.startsWith("[{"));
    }

    @Test
    public void jsonRoundTrip() {
        Object v = Json.parse("{\"a\": [1, 2.5, \"x\\u00e9\\n\\ud83d\\ude00\"], \"b\": null, \"c\": true}");
        assertEquals("{\"a\": [1.0, 2.5, \"x\u00e9\\n\ud83d\ude00\"], \"b\": null, \"c\": true}", Json.write(v));
    }
}
