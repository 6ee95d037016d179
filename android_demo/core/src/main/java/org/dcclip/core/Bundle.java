package org.dcclip.core;

import java.io.IOException;
import java.nio.charset.Charset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * An export bundle as `dcclip-compress export` writes it: bundle.json (image_size, context_length, pad_id,
 * logit_scale, embed_dim, files, templates), tokenizer.json, the .pte files, and when present preprocess.json and a
 * label set.
 */
public final class Bundle {
    private static final Charset UTF8 = Charset.forName("UTF-8");

    public final BundleSource source;
    public final Map<String, Object> meta;
    public final int imageSize, contextLength, padId, embedDim;
    public final double logitScale;
    public final String imagePte, textPte, quant;
    public final ImagePreprocessor preprocessor;
    public final WordPieceTokenizer tokenizer;
    public final LabelSet labels;  // null when the bundle has none
    /**
     * Prompt templates per language for labels typed on the phone, as the bundle's label embeddings were made:
     * bundle.json's (else labels.json's) "templates" {lang: [str, ...]}, else "prompt_templates" {lang: str};
     * {@link #templatesFor} gives "{}" for a language with neither.
     */
    public final Map<String, List<String>> templates;

    public Bundle(BundleSource source) throws IOException {
        this.source = source;
        if (!source.exists("bundle.json"))
            throw new IllegalArgumentException("bundle: no bundle.json in " + source + "; push an export folder written by `dcclip-compress export`");
        meta = Json.parseObject(text(source, "bundle.json"));
        imageSize = Json.getInt(meta, "image_size", "bundle.json");
        contextLength = Json.getInt(meta, "context_length", "bundle.json");
        padId = Json.getInt(meta, "pad_id", "bundle.json");
        embedDim = Json.getInt(meta, "embed_dim", "bundle.json");
        logitScale = Json.getDouble(meta, "logit_scale", "bundle.json");
        String[] files = pteFiles(meta);
        quant = files[0];
        imagePte = files[1];
        textPte = files[2];
        Map<String, Object> pre = source.exists("preprocess.json") ? Json.parseObject(text(source, "preprocess.json")) : null;
        preprocessor = ImagePreprocessor.fromBundle(meta, pre);
        tokenizer = WordPieceTokenizer.fromJson(text(source, "tokenizer.json"));
        Map<String, Object> labelDoc = source.exists("labels.json") ? Json.parseObject(text(source, "labels.json")) : null;
        labels = labelDoc == null ? null : LabelSet.read(source, "labels.json", labelDoc, embedDim, quant);
        List<Map<String, Object>> docs = new ArrayList<Map<String, Object>>();
        docs.add(meta);
        if (labelDoc != null) docs.add(labelDoc);
        templates = readTemplates(docs);
    }

    /** "templates" {lang: [str, ...]} of the first doc that has a language's list, else its "prompt_templates" {lang: str}. */
    static Map<String, List<String>> readTemplates(List<Map<String, Object>> docs) {
        Map<String, List<String>> out = new LinkedHashMap<String, List<String>>();
        for (String key : new String[] {"templates", "prompt_templates"}) {
            for (Map<String, Object> doc : docs) {
                Map<String, Object> byLang = Json.obj(doc, key);
                if (byLang == null) continue;
                for (Map.Entry<String, Object> e : byLang.entrySet()) {
                    if (out.containsKey(e.getKey())) continue;
                    List<String> list = new ArrayList<String>();
                    Object v = e.getValue();
                    if (v instanceof String) list.add((String) v);
                    else if (v instanceof List) for (Object t : (List<?>) v) if (t instanceof String) list.add((String) t);
                    for (String t : list)
                        if (!t.contains("{}"))
                            throw new IllegalArgumentException("bundle: " + key + "." + e.getKey() + " template \"" + t + "\" has no {} for the label");
                    if (!list.isEmpty()) out.put(e.getKey(), Collections.unmodifiableList(list));
                }
            }
        }
        return Collections.unmodifiableMap(out);
    }

    /** The templates a label in `lang` is wrapped in: the bundle's, else just the label ("{}"). */
    public List<String> templatesFor(String lang) {
        List<String> t = templates.get(lang);
        return t == null ? Arrays.asList("{}") : t;
    }

    /** files: {quant: {image: name, text: name}}; int8 when there, else the first. -> {quant, image, text}. */
    @SuppressWarnings("unchecked")
    static String[] pteFiles(Map<String, Object> meta) {
        Map<String, Object> files = Json.obj(meta, "files");
        if (files == null || files.isEmpty()) throw new IllegalArgumentException("bundle.json: 'files' names no .pte");
        String quant = files.containsKey("int8") ? "int8" : files.keySet().iterator().next();
        Object entry = files.get(quant);
        if (!(entry instanceof Map)) throw new IllegalArgumentException("bundle.json: files." + quant + " is not {image, text}");
        Map<String, Object> m = (Map<String, Object>) entry;
        return new String[] {quant, (String) m.get("image"), (String) m.get("text")};
    }

    public static String text(BundleSource source, String name) throws IOException {
        return new String(IO.readAll(source.open(name)), UTF8);
    }

    /** The text encoder's input for one label or prompt. */
    public long[] tokenize(String text) {
        return tokenizer.encodeFixed(text, contextLength, padId);
    }
}
