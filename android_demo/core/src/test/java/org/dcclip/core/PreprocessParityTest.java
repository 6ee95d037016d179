package org.dcclip.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.awt.image.BufferedImage;
import java.io.File;
import java.util.List;
import java.util.Map;
import javax.imageio.ImageIO;
import org.junit.Test;

/** The app's preprocessing == mobile_export/parity.py's reference_preprocess, within 1e-6, on the parity images. */
public class PreprocessParityTest {
    static int[] argb(BufferedImage img) {
        return img.getRGB(0, 0, img.getWidth(), img.getHeight(), null, 0, img.getWidth());  // 0xAARRGGBB, as Bitmap.getPixels
    }

    @Test
    public void parityImagesMatchPythonWithin1e6() throws Exception {
        File bundle = Golden.file("bundle");
        Bundle b = new Bundle(new BundleSource.Dir(bundle));
        Map<String, Object> p = Json.parseObject(Golden.text(new File(bundle, "parity/parity.json")));
        List<?> images = (List<?>) p.get("images");
        assertTrue(images.size() >= 4);
        double worst = 0;
        for (Object o : images) {
            Map<?, ?> im = (Map<?, ?>) o;
            BufferedImage img = ImageIO.read(new File(bundle, "parity/" + im.get("file")));
            float[] got = b.preprocessor.apply(argb(img), img.getWidth(), img.getHeight());
            float[] want = Golden.floats(new File(bundle, "parity/" + im.get("tensor")));
            assertEquals(3 * b.imageSize * b.imageSize, want.length);
            assertEquals(want.length, got.length);
            for (int k = 0; k < want.length; k++) worst = Math.max(worst, Math.abs(want[k] - got[k]));
        }
        assertTrue("max |java - python| = " + worst, worst <= 1e-6);
    }

    @Test
    public void layoutIsNchwRgb() {
        ImagePreprocessor pre = new ImagePreprocessor(2);
        // 2x2 image: red, green / blue, white (no resize at the same size)
        int[] px = {0xFFFF0000, 0xFF00FF00, 0xFF0000FF, 0xFFFFFFFF};
        float[] x = pre.apply(px, 2, 2);
        float[] want = {1, 0, 0, 1, /* G */ 0, 1, 0, 1, /* B */ 0, 0, 1, 1};
        for (int k = 0; k < want.length; k++) assertEquals("index " + k, want[k], x[k], 0f);
    }

    @Test
    public void transparentPixelsBecomeWhite() {
        float[] x = new ImagePreprocessor(1).apply(new int[] {0x00000000}, 1, 1);
        for (float v : x) assertEquals(1f, v, 0f);
    }

    @Test
    public void unknownPreprocessingIsRefused() {
        Map<String, Object> bundle = Json.parseObject("{\"image_size\": 32}");
        try {
            ImagePreprocessor.fromBundle(bundle, Json.parseObject("{\"resize_filter\": \"bicubic\"}"));
            throw new AssertionError("bicubic must be refused");
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage().contains("resize_filter"));
        }
    }
}
