package org.dcclip.core;

import java.io.FileOutputStream;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.runner.Description;
import org.junit.runner.JUnitCore;
import org.junit.runner.Request;
import org.junit.runner.Result;
import org.junit.runner.notification.Failure;
import org.junit.runner.notification.RunListener;

/**
 * Runs JUnit classes and writes one JSON line per test ({"test": "Class.method", "status": "passed|failed|skipped",
 * "message": ...}) so pytest can report every JUnit test as its own item: CI reads pytest's summary.
 * Usage: JUnitJson RESULTS.jsonl Class [Class...]
 */
public final class JUnitJson {
    public static void main(String[] args) throws Exception {
        final Map<String, String[]> results = new LinkedHashMap<String, String[]>();
        JUnitCore core = new JUnitCore();
        core.addListener(new RunListener() {
            @Override
            public void testStarted(Description d) {
                results.put(name(d), new String[] {"passed", ""});
            }

            @Override
            public void testFailure(Failure f) {
                String trace = f.getTrace();
                results.put(name(f.getDescription()), new String[] {"failed", trace.length() > 4000 ? trace.substring(0, 4000) : trace});
            }

            @Override
            public void testIgnored(Description d) {
                results.put(name(d), new String[] {"skipped", ""});
            }
        });
        Class<?>[] classes = new Class<?>[args.length - 1];
        for (int k = 1; k < args.length; k++) classes[k - 1] = Class.forName(args[k]);
        Result r = core.run(Request.classes(classes));
        Writer w = new OutputStreamWriter(new FileOutputStream(args[0]), "UTF-8");
        for (Map.Entry<String, String[]> e : results.entrySet()) {
            Map<String, Object> line = new LinkedHashMap<String, Object>();
            line.put("test", e.getKey());
            line.put("status", e.getValue()[0]);
            line.put("message", e.getValue()[1]);
            w.write(Json.write(line) + "\n");
        }
        w.close();
        System.out.println(r.getRunCount() + " run, " + r.getFailureCount() + " failed, " + r.getIgnoreCount() + " skipped");
    }

    static String name(Description d) {
        String c = d.getClassName();
        String method = d.getMethodName();
        return c.substring(c.lastIndexOf('.') + 1) + (method == null ? "" : "." + method);
    }
}
