#!/usr/bin/env bash
# Build a signed debug APK of the demo app with Debian's tools, no Gradle and no Android SDK download:
#   aapt2 (resources + manifest + assets), javac against API 23's android.jar, dx (dex), zipalign, apksigner.
# ExecuTorch's Java classes are compile-only stubs (stubs/) left out of the dex: the APK runs once the real
# executorch-android AAR's classes.jar and libexecutorch_jni.so are added (EXECUTORCH_AAR=path/to.aar does that).
# Usage: build-apk.sh BUNDLE_DIR OUT.apk      (called by `make android` at the repository root)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
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
rm -rf "$B" && mkdir -p "$B/gen" "$B/classes" "$B/stubs" "$B/assets/bundle"
# The bundle: bundle.json, tokenizer.json, the .pte pair, preprocess.json / labels when present; parity/ stays out.
for f in "$BUNDLE"/*; do
  case "$(basename "$f")" in parity|parity.tmp|*.tmp|*.bpte|vela) ;; *) cp -r "$f" "$B/assets/bundle/";; esac
done
# The app's label set (labels.json + labels_<lang>.f32) from parity/ when the bundle has none of its own.
if [ ! -f "$B/assets/bundle/labels.json" ] && [ -f "$BUNDLE/parity/parity.json" ]; then
  cp "$BUNDLE/parity/parity.json" "$B/assets/bundle/labels.json"
  cp "$BUNDLE"/parity/labels_*.f32 "$B/assets/bundle/"
fi

# ---- resources, code, dex, package, sign ---------------------------------------------------------------------------
aapt2 compile --dir "$HERE/app/src/main/res" -o "$B/res.zip"
aapt2 link -o "$B/unsigned.apk" -I "$ANDROID_JAR" --manifest "$HERE/app/src/main/AndroidManifest.xml" \
  --java "$B/gen" -A "$B/assets" -0 pte -0 f32 "$B/res.zip"
javac -encoding UTF-8 -nowarn -source 8 -target 8 -Xlint:-options -bootclasspath "$ANDROID_JAR" -d "$B/stubs" \
  $(find "$HERE/stubs" -name '*.java')
CP="$B/stubs"
if [ -n "${EXECUTORCH_AAR:-}" ]; then  # the real API: its classes are dexed, its native libraries packed
  mkdir -p "$B/aar" && unzip -q -o "$EXECUTORCH_AAR" -d "$B/aar"
  CP="$B/aar/classes.jar"; (cd "$B/classes" && unzip -q -o "$B/aar/classes.jar")
fi
javac -encoding UTF-8 -nowarn -source 8 -target 8 -Xlint:-options -bootclasspath "$ANDROID_JAR" -cp "$CP" -d "$B/classes" \
  $(find "$HERE/core/src/main/java" "$HERE/app/src/main/java" "$B/gen" -name '*.java')
if [ -d "$B/classes/org/pytorch" ] && [ -z "${EXECUTORCH_AAR:-}" ]; then die "stub classes leaked into the dex input"; fi
java -jar "$DX_JAR" --dex --min-sdk-version=23 --output="$B/classes.dex" "$B/classes"
cp "$B/unsigned.apk" "$B/app-unaligned.apk"
(cd "$B" && zip -q app-unaligned.apk classes.dex)
if [ -n "${EXECUTORCH_AAR:-}" ] && [ -d "$B/aar/jni" ]; then
  (cd "$B/aar" && mkdir -p lib && cp -r jni/* lib/ && zip -q -0 -r "$B/app-unaligned.apk" lib)
fi
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
echo "android: $OUT ($(du -h "$OUT" | cut -f1)); signed, launchable org.dcclip.demo/.MainActivity, bundle from $BUNDLE"
