package org.dcclip.core;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/** {@link UnicodeTables}' strings decoded once into sorted ranges and a map. */
final class Tables {
    private Tables() {}

    static final int[] CONTROL_LO, CONTROL_HI, PUNCT_LO, PUNCT_HI;
    static final Map<Integer, int[]> MAP = new HashMap<Integer, int[]>();

    static {
        int[][] c = ranges(UnicodeTables.CONTROL);
        CONTROL_LO = c[0];
        CONTROL_HI = c[1];
        int[][] p = ranges(UnicodeTables.PUNCT);
        PUNCT_LO = p[0];
        PUNCT_HI = p[1];
        for (String entry : join(UnicodeTables.MAP).split(";")) {
            if (entry.isEmpty()) continue;
            int colon = entry.indexOf(':');
            String to = entry.substring(colon + 1);
            String[] parts = to.isEmpty() ? new String[0] : to.split(",");
            int[] cps = new int[parts.length];
            for (int k = 0; k < parts.length; k++) cps[k] = Integer.parseInt(parts[k], 16);
            MAP.put(Integer.parseInt(entry.substring(0, colon), 16), cps);
        }
    }

    private static String join(String[] chunks) {
        StringBuilder b = new StringBuilder();
        for (String s : chunks) b.append(s);
        return b.toString();
    }

    private static int[][] ranges(String[] chunks) {
        List<int[]> rs = new ArrayList<int[]>();
        for (String r : join(chunks).split(";")) {
            if (r.isEmpty()) continue;
            int dash = r.indexOf('-');
            int lo = Integer.parseInt(dash < 0 ? r : r.substring(0, dash), 16);
            int hi = dash < 0 ? lo : Integer.parseInt(r.substring(dash + 1), 16);
            rs.add(new int[] {lo, hi});
        }
        int[][] out = new int[2][rs.size()];
        for (int k = 0; k < rs.size(); k++) {
            out[0][k] = rs.get(k)[0];
            out[1][k] = rs.get(k)[1];
        }
        return out;
    }

    /** Whether c lies in one of the sorted, disjoint ranges [lo[i], hi[i]]. */
    static boolean in(int[] lo, int[] hi, int c) {
        int a = 0, b = lo.length - 1;
        while (a <= b) {
            int m = (a + b) >>> 1;
            if (c < lo[m]) b = m - 1;
            else if (c > hi[m]) a = m + 1;
            else return true;
        }
        return false;
    }
}
