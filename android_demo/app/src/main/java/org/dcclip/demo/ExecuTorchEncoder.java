package org.dcclip.demo;

import org.dcclip.core.Encoder;
import org.pytorch.executorch.EValue;
import org.pytorch.executorch.Module;
import org.pytorch.executorch.Tensor;

/** The two exported towers through ExecuTorch's Java API (one .pte per tower, method "forward", batch 1). */
final class ExecuTorchEncoder implements Encoder {
    private final Module image;
    private final Module text;
    private final int contextLength;
    /** Load time of each tower in ms (Module.load + loadMethod, as minibench measures it). */
    final double imageLoadMs, textLoadMs;
    /** Last call's latency per tower, ms. */
    double lastImageMs, lastTextMs;

    ExecuTorchEncoder(String imagePte, String textPte, int contextLength) {
        long t0 = System.nanoTime();
        image = Module.load(imagePte);
        image.loadMethod("forward");
        long t1 = System.nanoTime();
        text = Module.load(textPte);
        text.loadMethod("forward");
        long t2 = System.nanoTime();
        imageLoadMs = (t1 - t0) / 1e6;
        textLoadMs = (t2 - t1) / 1e6;
        this.contextLength = contextLength;
    }

    @Override
    public float[] encodeImage(float[] pixels, int size) {
        long t0 = System.nanoTime();
        EValue[] out = image.forward(EValue.from(Tensor.fromBlob(pixels, new long[] {1, 3, size, size})));
        float[] e = out[0].toTensor().getDataAsFloatArray();
        lastImageMs = (System.nanoTime() - t0) / 1e6;
        return e;
    }

    @Override
    public float[] encodeText(long[] ids) {
        long t0 = System.nanoTime();
        EValue[] out = text.forward(EValue.from(Tensor.fromBlob(ids, new long[] {1, contextLength})));
        float[] e = out[0].toTensor().getDataAsFloatArray();
        lastTextMs = (System.nanoTime() - t0) / 1e6;
        return e;
    }

    @Override
    public void close() {
        image.destroy();
        text.destroy();
    }
}
