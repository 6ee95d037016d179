package org.pytorch.executorch;

/** COMPILE-ONLY stub of ExecuTorch's EValue; never dexed. */
public class EValue {
    public static EValue from(Tensor tensor) {
        throw new UnsupportedOperationException("stub");
    }

    public Tensor toTensor() {
        throw new UnsupportedOperationException("stub");
    }
}
