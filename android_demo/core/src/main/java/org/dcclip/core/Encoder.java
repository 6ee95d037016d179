package org.dcclip.core;

/**
 * The two exported towers, behind the smallest interface the app needs. The app implements it with ExecuTorch's
 * Java API (org.pytorch.executorch.Module, one .pte per tower); the JVM tests implement it with a fake that returns
 * Python's embeddings. Outputs are raw embeddings; callers L2-normalise.
 */
public interface Encoder {
    /** pixels: float32 NCHW (1, 3, size, size) as {@link ImagePreprocessor#apply} makes it. */
    float[] encodeImage(float[] pixels, int size);

    /** ids: int64 (1, context_length), padded with the bundle's pad_id. */
    float[] encodeText(long[] ids);

    void close();
}
