package org.dcclip.core;

import java.io.IOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Precomputed, L2-normalised label embeddings per language: names and a row-major (count, dim) float32 matrix each.
 *
 * labels.json: {"dim": D, "langs": {"en": {"names": [...], "file": "labels_en.f32"}, "zh": {...}}}; each file raw
 * little-endian float32 (numpy '<f4'). Rows are the label prompts' text embeddings, in names order.
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
        Map<String, Object> root = Json.parseObject(Bundle.text(source, name));
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

    public List<String> languages() {
        return new ArrayList<String>(names.keySet());
    }
}
