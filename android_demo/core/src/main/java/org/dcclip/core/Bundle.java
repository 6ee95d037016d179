package org.dcclip.core;

import java.io.IOException;
import java.nio.charset.Charset;
import java.util.Map;

/**
 * An export bundle as `dcclip-compress export` writes it: bundle.json (image_size, context_length, pad_id,
 * logit_scale, embed_dim, files), tokenizer.json, the .pte files, and when present preprocess.json and a label set.
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
        labels = source.exists("labels.json") ? LabelSet.read(source, "labels.json", embedDim, quant) : null;
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
