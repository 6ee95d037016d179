#!/usr/bin/env bash
# Build a signed debug APK of the demo app with Debian's tools, no Gradle and no Android SDK download:
#   aapt2 (resources + manifest + assets), javac against API 23's android.jar, dx (dex), zipalign, apksigner.
# Without the ExecuTorch AAR, ExecuTorch's Java classes are compile-only stubs (stubs/) left out of the dex: that APK
# shows the UI and runs the tokenizer, but cannot run a model (the last line says so). To run models, give the
# runtime and what its Module imports; their classes are dexed and their jni/<abi>/*.so packed as lib/<abi>/:
#   EXECUTORCH_AAR=executorch-android-1.5.1.aar   org.pytorch:executorch-android (gradle.properties executorchVersion)
#   FBJNI_AAR=fbjni-0.7.0.aar                      com.facebook.fbjni:fbjni
#   SOLOADER_AAR=nativeloader-0.10.5.jar           com.facebook.soloader:nativeloader
#   ANDROID_LIBS=DIR                               any further .aar / .jar (e.g. kotlin-stdlib), or all of the above
#   ANDROID_ABIS="arm64-v8a"                       only these ABIs' native libraries (default: all in the AARs)
# After dexing, every class the app reaches must be in classes.dex or android.jar (tools/android_libs.py check).
# The bundle: only the files the app loads (the int8 scheme's .pte pair; mobile_export/bundle/android.py).
# Usage: build-apk.sh BUNDLE_DIR OUT.apk      (called by `make android` at the repository root)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON3:-python3}
BUNDLE=${1:?usage: build-apk.sh BUNDLE_DIR OUT.apk}
OUT=${2:?usage: build-apk.sh BUNDLE_DIR OUT.apk}
B=$HERE/build/apk
SDK=${ANDROID_DEMO_SDK:-$HERE/.sdk}
die() { echo "error: $*" >&2; exit 2; }

# ---- tools: bookworm packages, plus android.jar (API 23) and dx from bullseye (bookworm has neither) ----------------
need=()
for t in javac:default-jdk-headless keytool:default-jdk-headless aapt2:android-sdk-build-tools aapt:android-sdk-build-tools \
         zipalign:android-sdk-build-tools apksigner:android-sdk-build-tools zip:zip unzip:unzip; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if ((${#need[@]})); then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  [ "$(id -u)" = 0 ] || die "missing ${need[*]}; run: sudo apt-get install -y --no-install-recommends ${need[*]}"
  echo "android: installing ${need[*]} (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || die "apt-get install ${need[*]} failed"
fi
ANDROID_JAR=$SDK/usr/lib/android-sdk/platforms/android-23/android.jar
DX_JAR=$SDK/usr/lib/android-sdk/build-tools/debian/lib/dx.jar
if [ ! -f "$ANDROID_JAR" ] || [ ! -f "$DX_JAR" ]; then
  echo "android: fetching android.jar (API 23) and dx from Debian bullseye (libandroid-23-java, dalvik-exchange)"
  D=$(mktemp -d)
  KEYRING=/usr/share/keyrings/debian-archive-bullseye-stable.gpg
  [ -f "$KEYRING" ] || KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
  MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  echo "deb [signed-by=$KEYRING] $MIRROR bullseye main" > "$D/sources.list"
  A=(-o "Dir::Etc::SourceList=$D/sources.list" -o Dir::Etc::SourceParts=/nonexistent -o "Dir::State::Lists=$D/lists"
     -o "Dir::Cache=$D/cache" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Sandbox::User=root)
  mkdir -p "$D/lists/partial" "$D/cache/archives/partial"
  (apt-get "${A[@]}" update -qq && cd "$D" && apt-get "${A[@]}" download -qq libandroid-23-java dalvik-exchange) >/dev/null \
    || die "could not download libandroid-23-java and dalvik-exchange from Debian bullseye ($MIRROR); bullseye is past end of life: set DEBIAN_MIRROR=http://archive.debian.org/debian or put android.jar and dx.jar under $SDK (see ../shared/notes/android-toolchain.md)"
  mkdir -p "$SDK"
  for deb in "$D"/*.deb; do dpkg-deb -x "$deb" "$SDK"; done
  rm -rf "$D"
  [ -f "$ANDROID_JAR" ] && [ -f "$DX_JAR" ] || die "android.jar or dx.jar not found in the bullseye packages"
fi

# ---- inputs ----------------------------------------------------------------------------------------------------------
[ -f "$BUNDLE/bundle.json" ] || die "BUNDLE=$BUNDLE has no bundle.json; pass an export folder (dcclip-compress export ... --out DIR)"
rm -rf "$B" && mkdir -p "$B/gen" "$B/classes" "$B/stubs" "$B/assets/bundle" "$B/lib"
# Only what the app loads: bundle.json, tokenizer.json, preprocess.json, the .pte pair of the scheme it runs (int8 when
# there) and labels.json with that scheme's embeddings (else parity/'s label set); other schemes, .bpte, parity/ stay out.
ASSETS=$("$PY" "$REPO/mobile_export/bundle/android.py" assets "$BUNDLE") || die "BUNDLE=$BUNDLE: the app's files could not be listed (above)"
while IFS=$'\t' read -r src dst; do cp "$BUNDLE/$src" "$B/assets/bundle/$dst"; done <<<"$ASSETS"

# ---- resources, code, dex, package, sign ---------------------------------------------------------------------------
aapt2 compile --dir "$HERE/app/src/main/res" -o "$B/res.zip"
aapt2 link -o "$B/unsigned.apk" -I "$ANDROID_JAR" --manifest "$HERE/app/src/main/AndroidManifest.xml" \
  --java "$B/gen" -A "$B/assets" -0 pte -0 f32 "$B/res.zip"
javac -encoding UTF-8 -nowarn -source 8 -target 8 -Xlint:-options -bootclasspath "$ANDROID_JAR" -d "$B/stubs" \
  $(find "$HERE/stubs" -name '*.java')
# The runtime and its dependencies (the AAR route): classes into the dex input, jni/<abi>/*.so into lib/<abi>/.
LIBS=()
for v in EXECUTORCH_AAR FBJNI_AAR SOLOADER_AAR; do [ -z "${!v:-}" ] || LIBS+=("${!v}"); done
if [ -n "${ANDROID_LIBS:-}" ]; then
  [ -d "$ANDROID_LIBS" ] || die "ANDROID_LIBS=$ANDROID_LIBS is not a folder of .aar / .jar files"
  for f in "$ANDROID_LIBS"/*.aar "$ANDROID_LIBS"/*.jar; do [ ! -f "$f" ] || LIBS+=("$f"); done
fi
if ((${#LIBS[@]})); then
  "$PY" "$HERE/tools/android_libs.py" unpack --classes "$B/classes" --jni "$B/lib" --abi "${ANDROID_ABIS:-}" "${LIBS[@]}" \
    | sed 's/^/android: /' || die "could not unpack ${LIBS[*]}"
  rm -rf "$B/classes/META-INF"
fi
RUNTIME=0; [ -f "$B/classes/org/pytorch/executorch/Module.class" ] && RUNTIME=1
((${#LIBS[@]} == 0 || RUNTIME)) || die "none of ${LIBS[*]} holds org.pytorch.executorch.Module: pass the ExecuTorch AAR as EXECUTORCH_AAR="
CP="$B/stubs"; ((RUNTIME)) && CP="$B/classes"   # compile against the real API when it is there, else the stubs
javac -encoding UTF-8 -nowarn -source 8 -target 8 -Xlint:-options -bootclasspath "$ANDROID_JAR" -cp "$CP" -d "$B/classes" \
  $(find "$HERE/core/src/main/java" "$HERE/app/src/main/java" "$B/gen" -name '*.java')
if [ -d "$B/classes/org/pytorch" ] && ((!RUNTIME)); then die "stub classes leaked into the dex input"; fi
java -jar "$DX_JAR" --dex --min-sdk-version=23 --output="$B/classes.dex" "$B/classes"
# Every class the app reaches is in classes.dex or android.jar; without the runtime, only ExecuTorch's may be missing.
ALLOW=(); ((RUNTIME)) || ALLOW=(--allow-missing org/pytorch/executorch/)
"$PY" "$HERE/tools/android_libs.py" check --platform "$ANDROID_JAR" --dex "$B/classes.dex" "${ALLOW[@]}" "$B/classes" \
  || exit 2  # one line above: the missing class, who uses it, which library brings it
if ((RUNTIME)); then  # Module loads libexecutorch.so, fbjni's HybridData libfbjni.so (through NativeLoader)
  compgen -G "$B/lib/*/libexecutorch*.so" >/dev/null || die "no jni/<abi>/libexecutorch*.so in ${LIBS[*]}: pass the ExecuTorch AAR itself as EXECUTORCH_AAR="
  compgen -G "$B/lib/*/libfbjni.so" >/dev/null || die "no jni/<abi>/libfbjni.so in ${LIBS[*]}: add fbjni's AAR (FBJNI_AAR=.../fbjni-0.7.0.aar), not a classes-only jar"
fi
cp "$B/unsigned.apk" "$B/app-unaligned.apk"
(cd "$B" && zip -q app-unaligned.apk classes.dex)
if [ -n "$(ls -A "$B/lib")" ]; then (cd "$B" && zip -q -0 -r app-unaligned.apk lib); fi
zipalign -f -p 4 "$B/app-unaligned.apk" "$B/app-aligned.apk"
KS=$HERE/build/debug.keystore
[ -f "$KS" ] || keytool -genkeypair -keystore "$KS" -storepass android -keypass android -alias androiddebugkey \
  -keyalg RSA -keysize 2048 -validity 10000 -dname "CN=Android Debug,O=Android,C=US" >/dev/null 2>&1
mkdir -p "$(dirname "$OUT")"
apksigner sign --ks "$KS" --ks-pass pass:android --out "$OUT" "$B/app-aligned.apk"

# ---- checks ----------------------------------------------------------------------------------------------------------
apksigner verify "$OUT" || die "apksigner verify failed"
aapt dump badging "$OUT" > "$B/badging.txt"; grep -q "^launchable-activity: name='org.dcclip.demo.MainActivity'" "$B/badging.txt" || die "no launchable activity"
LIST=$(unzip -l "$OUT")
for f in assets/bundle/bundle.json assets/bundle/tokenizer.json classes.dex; do
  grep -q " $f\$" <<<"$LIST" || die "$f is missing from the APK"
done
unzip -p "$OUT" classes.dex > "$B/check.dex"
for c in org/dcclip/demo/MainActivity org/dcclip/core/WordPieceTokenizer org/dcclip/core/ImagePreprocessor; do
  grep -aq "L$c;" "$B/check.dex" || die "class $c is not in classes.dex"
done
if ((RUNTIME)); then
  echo "android: $OUT ($(du -h "$OUT" | cut -f1)); signed, launchable org.dcclip.demo/.MainActivity with the ExecuTorch runtime ($(ls "$B/lib" | paste -sd, - | sed 's/,/, /g')), bundle from $BUNDLE"
else
  echo "android: WARNING: $OUT ($(du -h "$OUT" | cut -f1), bundle from $BUNDLE) is UI and tokenizer only, NO ExecuTorch runtime: add the ExecuTorch AAR to run models (EXECUTORCH_AAR=... FBJNI_AAR=... SOLOADER_AAR=..., docs/android.md)"
fi
