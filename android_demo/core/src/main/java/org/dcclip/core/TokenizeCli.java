package org.dcclip.core;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStreamWriter;
import java.io.PrintWriter;
import java.nio.charset.Charset;
import java.util.ArrayList;
import java.util.List;

/**
 * {@code java org.dcclip.core.TokenizeCli TOKENIZER.json [CONTEXT_LENGTH PAD_ID] < lines.txt}: one JSON array of ids per
 * UTF-8 input line (split on '\n' only, so a line keeps any '\r' the way Python's line.rstrip("\n") does). Without
 * CONTEXT_LENGTH the ids are {@code Tokenizer.from_file(path).encode(line).ids}; with it, the model's fixed-length input.
 */
public final class TokenizeCli {
    private static final Charset UTF8 = Charset.forName("UTF-8");

    public static void main(String[] args) throws IOException {
        if (args.length != 1 && args.length != 3) {
            System.err.println("usage: TokenizeCli TOKENIZER.json [CONTEXT_LENGTH PAD_ID] < lines.txt");
            System.exit(2);
        }
        File f = new File(args[0]);
        if (!f.isFile()) {
            System.err.println("error: tokenizer file '" + args[0] + "' not found; pass TOKENIZER=/path/to/tokenizer.json");
            System.exit(2);
        }
        WordPieceTokenizer tok;
        try {
            tok = WordPieceTokenizer.fromJson(new String(IO.readAll(new java.io.FileInputStream(f)), UTF8));
        } catch (IllegalArgumentException e) {
            System.err.println("error: " + e.getMessage());
            System.exit(2);
            return;
        }
        int context = args.length == 3 ? Integer.parseInt(args[1]) : -1;
        int padId = args.length == 3 ? Integer.parseInt(args[2]) : 0;
        PrintWriter out = new PrintWriter(new OutputStreamWriter(System.out, UTF8), false);
        for (String line : lines(System.in)) {
            out.println(Json.write(context >= 0 ? tok.encodeFixed(line, context, padId) : tok.encode(line)));
        }
        out.flush();
    }

    static List<String> lines(InputStream in) throws IOException {
        String all = new String(IO.readAll(in), UTF8);
        List<String> lines = new ArrayList<String>();
        int start = 0;
        while (start < all.length()) {
            int nl = all.indexOf('\n', start);
            if (nl < 0) { lines.add(all.substring(start)); break; }
            lines.add(all.substring(start, nl));
            start = nl + 1;
        }
        return lines;
    }
}
