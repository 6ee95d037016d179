package org.dcclip.core;

import java.io.IOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Precomputed, L2-normalised label embeddings per language: names and a row-major (count, dim) float32 matrix each.
 *
 * Two layouts, both raw little-endian float32 (numpy '<f4'), rows = the label prompts' text embeddings:
 * <ul>
 *   <li>the export bundle's labels.json (mobile_export/bundle/write.py): {"labels": [{"en", "zh"}...], "languages":
 *       [...], "embeddings": {quant: {"file", "shape": [languages, N, D]}}}. A label may have one language only: its
 *       other language's row is its one name in that name's own templates, so it shows under that name there;</li>
 *   <li>parity/parity.json: {"dim": D, "langs": {"en": {"names": [...], "file": "labels_en.f32"}, ...}}.</li>
 * </ul>
 */
public final class LabelSet {
    public final int dim;
    public final Map<String, String[]> names = new LinkedHashMap<String, String[]>();
    public final Map<String, float[]> matrix = new LinkedHashMap<String, float[]>();

    public LabelSet(int dim) {
        this.dim = dim;
    }

    public void put(String lang, String[] labelNames, float[] rows) {
        if (rows.length != labelNames.length * dim)
            throw new IllegalArgumentException("labels: " + lang + " has " + labelNames.length + " names but " + rows.length / (double) dim + " rows of " + dim);
        names.put(lang, labelNames);
        matrix.put(lang, rows);
    }

    @SuppressWarnings("unchecked")
    public static LabelSet read(BundleSource source, String name, int expectDim) throws IOException {
        return read(source, name, expectDim, null);
    }

    public static LabelSet read(BundleSource source, String name, int expectDim, String quant) throws IOException {
        return read(source, name, Json.parseObject(Bundle.text(source, name)), expectDim, quant);
    }

    /** The same, from the file's already parsed JSON. */
    @SuppressWarnings("unchecked")
    public static LabelSet read(BundleSource source, String name, Map<String, Object> root, int expectDim, String quant)
            throws IOException {
        if (root.get("labels") instanceof List) return readExport(source, name, root, expectDim, quant);
        int dim = root.containsKey("dim") ? Json.getInt(root, "dim", name) : expectDim;
        if (dim != expectDim) throw new IllegalArgumentException(name + ": dim " + dim + " but the bundle's embed_dim is " + expectDim);
        Map<String, Object> langs = Json.obj(root, "langs");
        if (langs == null) throw new IllegalArgumentException(name + ": no 'langs' {en: {names, file}, zh: {...}}");
        LabelSet set = new LabelSet(dim);
        for (Map.Entry<String, Object> e : langs.entrySet()) {
            Map<String, Object> lang = (Map<String, Object>) e.getValue();
            List<Object> list = (List<Object>) lang.get("names");
            String[] labelNames = new String[list.size()];
            for (int k = 0; k < labelNames.length; k++) labelNames[k] = (String) list.get(k);
            String file = (String) lang.get("file");
            if (file == null || !source.exists(file)) throw new IllegalArgumentException(name + ": embeddings file " + file + " for " + e.getKey() + " is missing");
            set.put(e.getKey(), labelNames, IO.floatsLE(IO.readAll(source.open(file))));
        }
        return set;
    }

    @SuppressWarnings("unchecked")
    private static LabelSet readExport(BundleSource source, String name, Map<String, Object> root, int dim, String quant)
            throws IOException {
        Map<String, Object> all = Json.obj(root, "embeddings");
        if (all == null || all.isEmpty()) throw new IllegalArgumentException(name + ": no label embeddings");
        Map<String, Object> emb = Json.obj(all, quant != null && all.containsKey(quant) ? quant : all.keySet().iterator().next());
        List<Object> shape = (List<Object>) emb.get("shape");
        List<Object> labels = (List<Object>) root.get("labels");
        List<Object> langs = (List<Object>) root.get("languages");
        int n = labels.size();
        if (shape.size() != 3 || ((Number) shape.get(0)).intValue() != langs.size() || ((Number) shape.get(1)).intValue() != n
                || ((Number) shape.get(2)).intValue() != dim)
            throw new IllegalArgumentException(name + ": embeddings shape " + shape + " is not [" + langs.size() + ", " + n + ", " + dim + "]");
        String file = (String) emb.get("file");
        if (file == null || !source.exists(file)) throw new IllegalArgumentException(name + ": embeddings file " + file + " is missing");
        float[] flat = IO.floatsLE(IO.readAll(source.open(file)));
        LabelSet set = new LabelSet(dim);
        for (int l = 0; l < langs.size(); l++) {
            String lang = (String) langs.get(l);
            String[] names = new String[n];
            for (int k = 0; k < n; k++) names[k] = labelName(labels.get(k), lang, name, k);
            set.put(lang, names, java.util.Arrays.copyOfRange(flat, l * n * dim, (l + 1) * n * dim));
        }
        return set;
    }

    /** A label's name in `lang`, else its name in the other language (a one-language label). */
    static String labelName(Object label, String lang, String file, int k) {
        if (!(label instanceof Map)) throw new IllegalArgumentException(file + ": label " + k + " is not an object");
        Map<?, ?> m = (Map<?, ?>) label;
        Object own = m.get(lang);
        if (own instanceof String && !((String) own).isEmpty()) return (String) own;
        for (String other : new String[] {"en", "zh"}) {
            Object v = m.get(other);
            if (v instanceof String && !((String) v).isEmpty()) return (String) v;
        }
        throw new IllegalArgumentException(file + ": label " + k + " has no en or zh name");
    }

    public List<String> languages() {
        return new ArrayList<String>(names.keySet());
    }
}
