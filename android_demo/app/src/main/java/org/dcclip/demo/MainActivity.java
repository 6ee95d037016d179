package org.dcclip.demo;

import android.app.Activity;
import android.content.Intent;
import android.graphics.Bitmap;
import android.graphics.BitmapFactory;
import android.net.Uri;
import android.os.Build;
import android.os.Bundle;
import android.provider.MediaStore;
import android.util.Log;
import android.view.View;
import android.widget.Button;
import android.widget.EditText;
import android.widget.ImageView;
import android.widget.TextView;
import java.io.File;
import java.io.FileOutputStream;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.dcclip.core.Latency;
import org.dcclip.core.ZeroShot;

/**
 * Bilingual zero-shot on the phone: a photo from the gallery or the camera -> top-5 labels in Chinese and English from
 * the bundle's label embeddings, the user's own labels embedded on the phone (in the bundle's prompt templates of
 * their language, like the bundle's own labels), per-call latency of each encoder.
 * Benchmark: the button, or `adb shell am start -n org.dcclip.demo/.MainActivity --ei bench_iters 50
 * [--ei bench_warmup 3]` (what `dcclip-compress bench BUNDLE --device adb --demo` sends), times the image and text
 * programs the app loaded (int8 when the bundle has them) and writes files/dcclip_bench.json in minibench's layout
 * (mobile_export/bench/adb.py reads it back); logcat -s dcclip shows it too.
 */
public class MainActivity extends Activity {
    static final String TAG = "dcclip";
    static final String BENCH_FILE = "dcclip_bench.json";
    private static final int PICK = 1, CAPTURE = 2, TOP = 5;

    private org.dcclip.core.Bundle bundle;
    private ExecuTorchEncoder encoder;
    private float[] imageEmbedding;
    private TextView status, topEn, topZh, topCustom, latency;
    private ImageView imageView;
    private EditText custom;

    @Override
    protected void onCreate(Bundle saved) {
        super.onCreate(saved);
        setContentView(R.layout.activity_main);
        status = (TextView) findViewById(R.id.status);
        topEn = (TextView) findViewById(R.id.top_en);
        topZh = (TextView) findViewById(R.id.top_zh);
        topCustom = (TextView) findViewById(R.id.top_custom);
        latency = (TextView) findViewById(R.id.latency);
        imageView = (ImageView) findViewById(R.id.image);
        custom = (EditText) findViewById(R.id.custom);
        ((Button) findViewById(R.id.gallery)).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                Intent i = new Intent(Intent.ACTION_GET_CONTENT);
                i.setType("image/*");
                startActivityForResult(i, PICK);
            }
        });
        ((Button) findViewById(R.id.camera)).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                startActivityForResult(new Intent(MediaStore.ACTION_IMAGE_CAPTURE), CAPTURE);  // thumbnail in "data"
            }
        });
        ((Button) findViewById(R.id.bench)).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                benchmark(50, 3);
            }
        });
        ((Button) findViewById(R.id.score_custom)).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                scoreCustom();
            }
        });
        background(new Runnable() {
            @Override
            public void run() {
                load();
                int iters = getIntent().getIntExtra("bench_iters", 0);
                if (iters > 0) benchmark(iters, Math.max(0, getIntent().getIntExtra("bench_warmup", 3)));
            }
        });
    }

    private void background(Runnable r) {
        new Thread(r, "dcclip-worker").start();
    }

    private void show(final TextView view, final String text) {
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                view.setText(text);
            }
        });
    }

    private synchronized void load() {
        if (encoder != null) return;
        try {
            org.dcclip.core.BundleSource source = AndroidBundle.find(this);
            bundle = new org.dcclip.core.Bundle(source);
            encoder = new ExecuTorchEncoder(AndroidBundle.path(this, source, bundle.imagePte),
                    AndroidBundle.path(this, source, bundle.textPte), bundle.contextLength);
            show(status, "bundle: " + source + " (" + bundle.quant + ", " + bundle.imageSize + " px, "
                    + (bundle.labels == null ? "no label set" : bundle.labels.names.values().iterator().next().length + " labels") + ")");
            show(latency, String.format("load: image %.1f ms, text %.1f ms", encoder.imageLoadMs, encoder.textLoadMs));
        } catch (Throwable e) {
            Log.e(TAG, "bundle", e);
            show(status, "bundle error: " + e.getMessage());
        }
    }

    @Override
    protected void onActivityResult(int request, int result, Intent data) {
        if (result != RESULT_OK || data == null) return;
        Bitmap bitmap = null;
        try {
            if (request == PICK && data.getData() != null) bitmap = decode(data.getData());
            else if (request == CAPTURE && data.getExtras() != null) bitmap = (Bitmap) data.getExtras().get("data");
        } catch (Exception e) {
            show(status, "could not read the image: " + e.getMessage());
        }
        if (bitmap == null) return;
        imageView.setImageBitmap(bitmap);
        final Bitmap b = bitmap;
        background(new Runnable() {
            @Override
            public void run() {
                classify(b);
            }
        });
    }

    /** Decoder subsampling (powers of two) keeps the shorter side >= 4x the model's input; preprocessing does the rest. */
    private Bitmap decode(Uri uri) throws Exception {
        BitmapFactory.Options o = new BitmapFactory.Options();
        o.inJustDecodeBounds = true;
        InputStream in = getContentResolver().openInputStream(uri);
        BitmapFactory.decodeStream(in, null, o);
        in.close();
        int want = 4 * (bundle == null ? 256 : bundle.imageSize), sample = 1;
        while (Math.min(o.outWidth, o.outHeight) / (sample * 2) >= want) sample *= 2;
        o = new BitmapFactory.Options();
        o.inSampleSize = sample;
        o.inPreferredConfig = Bitmap.Config.ARGB_8888;
        in = getContentResolver().openInputStream(uri);
        Bitmap b = BitmapFactory.decodeStream(in, null, o);
        in.close();
        return b;
    }

    private float[] pixels(Bitmap b) {
        int w = b.getWidth(), h = b.getHeight();
        int[] argb = new int[w * h];
        b.getPixels(argb, 0, w, 0, 0, w, h);
        return bundle.preprocessor.apply(argb, w, h);
    }

    private void classify(Bitmap b) {
        load();
        if (encoder == null) return;
        long t0 = System.nanoTime();
        float[] x = pixels(b);
        double prepMs = (System.nanoTime() - t0) / 1e6;
        imageEmbedding = encoder.encodeImage(x, bundle.imageSize);
        if (bundle.labels != null) {
            for (String lang : bundle.labels.languages()) {
                List<ZeroShot.Match> top = ZeroShot.topK(imageEmbedding, bundle.labels.names.get(lang),
                        bundle.labels.matrix.get(lang), bundle.logitScale, TOP);
                show("zh".equals(lang) ? topZh : topEn, lang + ":\n" + lines(top));
            }
        } else {
            show(topEn, "the bundle has no label set: type your own labels below");
        }
        show(latency, String.format("preprocess %.1f ms, image encoder %.1f ms, text encoder %s", prepMs,
                encoder.lastImageMs, encoder.lastTextMs > 0 ? String.format("%.1f ms", encoder.lastTextMs) : "-"));
    }

    private static String lines(List<ZeroShot.Match> top) {
        StringBuilder s = new StringBuilder();
        for (ZeroShot.Match m : top) s.append(String.format("%5.1f%%  %s%n", 100 * m.probability, m.label));
        return s.toString();
    }

    private void scoreCustom() {
        final List<String> labels = new ArrayList<String>();
        for (String line : custom.getText().toString().split("\n")) if (!line.trim().isEmpty()) labels.add(line.trim());
        background(new Runnable() {
            @Override
            public void run() {
                load();
                if (encoder == null || imageEmbedding == null || labels.isEmpty()) {
                    show(topCustom, "pick a photo and type at least one label");
                    return;
                }
                long t0 = System.nanoTime();
                float[] rows = ZeroShot.embedLabels(bundle, encoder, labels);  // each label in its language's templates
                double ms = (System.nanoTime() - t0) / 1e6;
                String[] names = labels.toArray(new String[0]);
                String unknown = ZeroShot.unknownNote(bundle, labels);  // characters the model cannot read
                show(topCustom, lines(ZeroShot.topK(imageEmbedding, names, rows, bundle.logitScale, TOP)) + (unknown == null ? "" : unknown));
                int prompts = 0;
                for (String label : labels) prompts += ZeroShot.prompts(bundle, label).size();
                show(latency, String.format("text encoder %.1f ms per label (%d labels, %d prompts, tokenizer included)", ms / labels.size(), labels.size(), prompts));
            }
        });
    }

    /** N timed calls of each tower after `warmup` untimed ones; minibench-layout JSON in files/dcclip_bench.json. */
    private void benchmark(final int iters, final int warmup) {
        background(new Runnable() {
            @Override
            public void run() {
                load();
                if (encoder == null) return;
                show(status, "benchmark: " + iters + " iterations per encoder (" + warmup + " warm-up) ...");
                final float[] x = new float[3 * bundle.imageSize * bundle.imageSize];
                java.util.Arrays.fill(x, 1f);
                final long[] ids = bundle.tokenize("an emoji of dog face");
                Map<String, Object> device = new LinkedHashMap<String, Object>();
                device.put("device", Build.BRAND);
                device.put("arch", Build.MODEL);
                device.put("os", "Android " + Build.VERSION.RELEASE);
                StringBuilder all = new StringBuilder("[");
                StringBuilder shown = new StringBuilder();
                for (int tower = 0; tower < 2; tower++) {
                    double[] ms = new double[iters];
                    for (int k = -warmup; k < iters; k++) {
                        long t0 = System.nanoTime();
                        if (tower == 0) encoder.encodeImage(x, bundle.imageSize);
                        else encoder.encodeText(ids);
                        if (k >= 0) ms[k] = (System.nanoTime() - t0) / 1e6;
                    }
                    String name = tower == 0 ? bundle.imagePte : bundle.textPte;
                    Map<String, Object> m = Latency.summarize(ms, tower == 0 ? encoder.imageLoadMs : encoder.textLoadMs);
                    String json = Latency.minibenchJson(name.replace(".pte", ""), "xnnpack", bundle.quant, m, device);
                    if (all.length() > 1) all.append(", ");
                    all.append(json, 1, json.length() - 1);
                    shown.append(String.format("%s: median %.2f ms, load %.1f ms%n", name, m.get("median_inference_latency(ms)"), m.get("model_load_time(ms)")));
                }
                all.append("]");
                try {
                    File out = new File(getFilesDir(), BENCH_FILE), tmp = new File(getFilesDir(), BENCH_FILE + ".tmp");
                    FileOutputStream o = new FileOutputStream(tmp);
                    o.write(all.toString().getBytes("UTF-8"));
                    o.close();
                    if (!tmp.renameTo(out)) throw new java.io.IOException("rename failed");
                    show(status, "benchmark written to " + out);
                } catch (Exception e) {
                    show(status, "benchmark: could not write results: " + e.getMessage());
                }
                show(latency, shown.toString());
                Log.i(TAG, "benchmark " + all);
            }
        });
    }

    @Override
    protected void onDestroy() {
        if (encoder != null) encoder.close();
        super.onDestroy();
    }

}
