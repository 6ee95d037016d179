package org.pytorch.executorch;

/** COMPILE-ONLY stub of ExecuTorch's Module (executorch-android AAR); never dexed. The real class is in the AAR. */
public class Module {
    public static Module load(String modelPath) {
        throw new UnsupportedOperationException("stub: build with the executorch-android AAR");
    }

    public void loadMethod(String methodName) {
        throw new UnsupportedOperationException("stub");
    }

    public EValue[] forward(EValue... inputs) {
        throw new UnsupportedOperationException("stub");
    }

    public void destroy() {
        throw new UnsupportedOperationException("stub");
    }
}
