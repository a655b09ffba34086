#!/usr/bin/env bash
# Rebuilds the demo corpus in data/demo/ (docs/demo-corpus.md): real speech copied from Debian
# main packages, synthetic pt-BR (and other-language) speech generated with espeak-ng from the
# texts below, a mix of formats, rates and channel counts.
#
# Usage: tools/make-demo-corpus.sh [OUT_DIR]   (default: data/demo next to this script's repo)
#   NO_INSTALL=1  do not apt-get install missing packages (fail instead)
#
# Every choice is deterministic (sorted file lists, fixed strides, sox -R, ffmpeg bitexact). With
# the same Debian package versions (see EXPECTED_VERSIONS) the output is byte-identical; other
# versions give equivalent but not identical files.
set -euo pipefail
export LC_ALL=C.UTF-8

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-"$ROOT/data/demo"}

PACKAGES=(
  asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav
  asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav
  tuxpaint-stamps-default klettres-data fillets-ng-data-cs pocketsphinx-testdata alsa-utils
  espeak-ng sox libsox-fmt-all flac ffmpeg
)
EXPECTED_VERSIONS="espeak-ng 1.51+dfsg-10+deb12u2; sox 14.4.2+git20190427-3.5; flac 1.4.2+ds-2; ffmpeg 7:5.1.9-0+deb12u1"

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ ${NO_INSTALL:-0} == 1 ]]; then
    echo "missing Debian packages: ${missing[*]} (install them or unset NO_INSTALL)" >&2
    exit 1
  fi
  echo "installing ${missing[*]}" >&2
  SUDO=""
  [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
have=$(for p in espeak-ng sox flac ffmpeg; do dpkg-query -W -f='${Package} ${Version}; ' "$p"; done)
if [[ "${have%; }" != "$EXPECTED_VERSIONS" ]]; then
  echo "note: package versions differ from the ones the committed corpus was built with;" >&2
  echo "      files will be equivalent but not byte-identical" >&2
  echo "      have:     ${have%; }" >&2
  echo "      expected: $EXPECTED_VERSIONS" >&2
fi

SOUNDS=/usr/share/asterisk/sounds
TUX=/usr/share/tuxpaint/stamps
KLET=/usr/share/klettres/pt_BR
FILLETS=/usr/share/games/fillets-ng/sound
SPHINX=/usr/share/pocketsphinx/test/data
ALSA=/usr/share/sounds/alsa
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

rm -rf "$OUT"/real_* "$OUT"/tts_* "$OUT"/licenses
mkdir -p "$OUT/licenses"

# The packages' own copyright files (with their licence texts) go next to the NOTICE.
cp /usr/share/doc/asterisk-core-sounds-en-wav/copyright "$OUT/licenses/asterisk-core-sounds.copyright"
for p in tuxpaint-stamps-default klettres-data fillets-ng-data-cs pocketsphinx-testdata alsa-utils; do
  cp "/usr/share/doc/$p/copyright" "$OUT/licenses/$p.copyright"
done
cp /usr/share/common-licenses/GPL-2 "$OUT/licenses/GPL-2"

# sox: repeatable (fixed dither seed), no dither; ffmpeg: no version strings, fixed stream ids.
sx() { sox -R -D -V1 "$@"; }
ff() {
  ffmpeg -nostdin -loglevel error -y -i "$1" -map_metadata -1 -fflags +bitexact \
    -flags:a +bitexact "${@:2}"
}

# Duration in seconds of an audio file.
dur() { soxi -D "$1"; }

# pick N FILE...: N files spread evenly over the (sorted) list.
pick() {
  local n=$1
  shift
  local total=$#
  local files=("$@")
  for ((i = 0; i < n; i++)); do
    echo "${files[$((i * total / n))]}"
  done
}

# ----------------------------------------------------------------------------------------------
# Bona fide 1: asterisk-core-sounds prompts, 8 kHz mono, 4 speakers (en and es are the same
# speaker, Allison Smith). Every 5th clip stays WAV (copied unchanged), the others become FLAC.
asterisk() { # asterisk SPEAKER LANG VOICE_DIR N
  local speaker=$1 lang=$2 dir=$SOUNDS/$3 n=$4
  local cands=() f
  while IFS= read -r f; do
    d=$(dur "$f")
    # prompts between 1.5 s and 9 s: most are shorter than 4 s, some longer
    if awk -v d="$d" 'BEGIN { exit !(d >= 1.5 && d <= 9.0) }'; then cands+=("$f"); fi
  done < <(find "$dir" -maxdepth 1 -name '*.wav' | sort)
  mkdir -p "$OUT/real_asterisk/$speaker"
  local k=0
  while IFS= read -r f; do
    local base
    base=$(basename "$f" .wav)
    if ((k % 5 == 4)); then
      cp "$f" "$OUT/real_asterisk/$speaker/$lang-$base.wav"
    else
      sx "$f" "$OUT/real_asterisk/$speaker/$lang-$base.flac"
    fi
    k=$((k + 1))
  done < <(pick "$n" "${cands[@]}")
}
asterisk allison en en_US_f_Allison 6
asterisk allison es es_MX_f_Allison 4
asterisk june fr fr_CA_f_June 10
asterisk carlo it it_IT_m_Carlo 10
asterisk ivrvoice_ru ru ru_RU_f_IvrvoiceRU 10

# Bona fide 2: tuxpaint-stamps-default pt_BR descriptions (44.1 kHz mono, under 1.1 s each,
# recorded by Brazilian children; one speaker folder since the package does not tell who speaks).
mkdir -p "$OUT/real_tuxpaint_ptbr/kids"
k=0
while IFS= read -r f; do
  base=$(basename "$f" _desc_pt_BR.wav)
  if ((k % 5 == 4)); then
    cp "$f" "$OUT/real_tuxpaint_ptbr/kids/$base.wav"
  else
    sx "$f" "$OUT/real_tuxpaint_ptbr/kids/$base.flac"
  fi
  k=$((k + 1))
done < <(find "$TUX" -name '*_desc_pt_BR.wav' | sort | head -n 8)

# Bona fide 3: klettres-data pt_BR letters and syllables (Ogg Vorbis, 44.1 kHz stereo), copied
# unchanged; recorded by the Monte family according to the package's sounds.xml.
mkdir -p "$OUT/real_klettres_ptbr/monte"
mapfile -t alpha < <(find "$KLET/alpha" -name '*.ogg' | sort)
mapfile -t syllab < <(find "$KLET/syllab" -name '*.ogg' | sort)
while IFS= read -r f; do cp "$f" "$OUT/real_klettres_ptbr/monte/letter-$(basename "$f")"; done \
  < <(pick 8 "${alpha[@]}")
while IFS= read -r f; do cp "$f" "$OUT/real_klettres_ptbr/monte/syllable-$(basename "$f")"; done \
  < <(pick 8 "${syllab[@]}")

# Bona fide 4: fillets-ng-data-cs game dialogue (Czech, Ogg Vorbis 22.05 kHz), copied unchanged.
# The file names tell the character: `-m-` the small fish, `-v-` the big fish, each voiced by
# one actor.
for who in m:small_fish v:big_fish; do
  code=${who%%:*} speaker=${who#*:}
  mkdir -p "$OUT/real_fillets_cs/$speaker"
  mapfile -t lines < <(find "$FILLETS" -path '*/cs/*' -name "*-$code-*.ogg" | sort)
  while IFS= read -r f; do
    cp "$f" "$OUT/real_fillets_cs/$speaker/$(basename "$(dirname "$(dirname "$f")")")-$(basename "$f")"
  done < <(pick 4 "${lines[@]}")
done

# Bona fide 5: English odds and ends, converted to FLAC at their native rates: a LibriVox reading
# shipped in pocketsphinx-testdata (16 kHz; one reader) and the voice of alsa-utils' speaker
# test (48 kHz).
mkdir -p "$OUT/real_english_misc/librivox_reader" "$OUT/real_english_misc/alsa_voice"
for n in 0870 0880; do
  sx "$SPHINX/librivox/sense_and_sensibility_01_austen_64kb-$n.wav" \
    "$OUT/real_english_misc/librivox_reader/austen-$n.flac"
done
sx "$ALSA/Front_Center.wav" "$OUT/real_english_misc/alsa_voice/front_center.flac"

# ----------------------------------------------------------------------------------------------
# Texts for the synthetic sources, written for this corpus (public domain). One per line.
cat > "$TMP/pt-br.txt" <<'EOF'
Bom dia, como posso ajudar você hoje?
O ônibus para o centro sai às sete e meia.
Minha avó faz o melhor pão de queijo da cidade.
Hoje vai chover à tarde, então leve o guarda-chuva.
O mercado da esquina fecha mais cedo aos domingos.
Por favor, digite o número do seu pedido e aguarde.
A reunião foi adiada para a próxima quinta-feira.
As crianças brincaram no parque até o pôr do sol.
Você pode me dizer onde fica a estação de metrô?
O café da manhã está servido na varanda.
Sim.
Não, obrigado.
Amanhã cedo vamos visitar a fazenda dos meus tios, que fica perto do rio, e só voltamos no domingo à noite.
O time ganhou o jogo no último minuto.
Preciso comprar arroz, feijão, tomate e cebola.
A biblioteca municipal abre às nove horas.
Quantos anos você tem?
O cachorro latiu a noite inteira.
Sua ligação é muito importante para nós, por favor aguarde na linha que em breve você será atendido.
A praia estava cheia de turistas no feriado.
Obrigado pela sua paciência.
O médico pediu exames de sangue.
Vamos tomar um sorvete depois da aula?
A festa junina terá quadrilha, pipoca e quentão.
O trem atrasou vinte minutos por causa da chuva.
Bola.
Casa amarela.
Meu irmão estuda engenharia em Belo Horizonte.
O avião pousou com segurança no aeroporto.
Feche a janela, por favor, está ventando muito.
O livro que você me emprestou é muito bom.
Depois do almoço a gente descansa um pouco na rede e depois volta para o trabalho na horta.
Três, dois, um, já!
A padaria abre cedinho.
Ela canta no coral da igreja.
O dia está lindo para andar de bicicleta.
Esqueci a senha do banco de novo.
Olá!
A professora explicou a lição com muita calma.
O gato dorme tranquilo no sofá da sala.
Você já almoçou?
Para falar com o atendente, pressione zero.
Uva.
A água do rio estava gelada.
Boa noite e até amanhã.
A feira de domingo tem frutas fresquinhas e pastel de carne.
Qual é o seu nome?
O som do violão encheu a casa de alegria.
Pato.
Bê.
Ma.
Tu.
EOF

cat > "$TMP/multi.txt" <<'EOF'
en-us	Please hold, your call will be answered shortly.
en-us	The number you have dialed is not available.
en-us	Thank you for calling, goodbye.
en-us	Press one to leave a message, or two to return to the main menu.
en-us	You have three new messages.
es	Por favor, espere en la línea.
es	El número que usted marcó no está disponible.
es	Gracias por llamar, hasta luego.
es	Oprima uno para dejar un mensaje, o dos para volver al menú principal.
es	Usted tiene tres mensajes nuevos.
fr	Veuillez patienter, nous allons prendre votre appel.
fr	Le numéro que vous avez composé n'est pas disponible.
fr	Merci de votre appel, au revoir.
fr	Appuyez sur un pour laisser un message, ou sur deux pour revenir au menu principal.
fr	Vous avez trois nouveaux messages.
it	Attendere prego, la chiamata sarà inoltrata a breve.
it	Il numero selezionato non è disponibile.
it	Grazie per aver chiamato, arrivederci.
it	Premere uno per lasciare un messaggio, oppure due per tornare al menu principale.
it	Avete tre nuovi messaggi.
ru	Пожалуйста, оставайтесь на линии.
ru	Набранный вами номер недоступен.
ru	Спасибо за звонок, до свидания.
ru	Нажмите один, чтобы оставить сообщение, или два, чтобы вернуться в главное меню.
ru	У вас три новых сообщения.
pt	Por favor, aguarde um momento.
pt	O número marcado não está disponível.
pt	Obrigado pela sua chamada, até logo.
pt	Prima um para deixar uma mensagem, ou dois para voltar ao menu principal.
pt	Tem três mensagens novas.
EOF

mapfile -t PT < "$TMP/pt-br.txt"

# say VOICE TEXT OUT.wav: espeak-ng at its native 22,050 Hz, peak-normalised to a level that
# varies with the clip number (so loudness is no shortcut).
say() {
  local voice=$1 text=$2 out=$3 level=$4
  espeak-ng -v "$voice" -w "$TMP/raw.wav" -- "$text"
  sx "$TMP/raw.wav" "$out" gain -n "$level"
}
level() { echo "-$((1 + ($1 * 7) % 9))"; }

# Spoof 1: espeak-ng pt-BR, six voice variants, wideband, mostly FLAC at mixed rates; a few
# 24-bit FLAC, 32-bit float WAV and stereo files.
k=0
for voice in m1 m3 f2 f4 m6 f5; do
  mkdir -p "$OUT/tts_espeak_ptbr/$voice"
  for ((j = 0; j < 5; j++)); do
    idx=$(((k * 7) % 40))
    text=${PT[$idx]}
    base="$OUT/tts_espeak_ptbr/$voice/$(printf '%02d' "$idx")"
    say "pt-br+$voice" "$text" "$TMP/s.wav" "$(level "$k")"
    case $((k % 6)) in
      0) sx "$TMP/s.wav" "$base.flac" rate -v 16000 ;;
      1) if ((k < 12)); then sx "$TMP/s.wav" "$base.flac"; else sx "$TMP/s.wav" "$base.flac" rate -v 16000; fi ;;
      2) if ((k < 12)); then sx "$TMP/s.wav" "$base.flac" rate -v 24000; else sx "$TMP/s.wav" "$base.flac" rate -v 16000; fi ;;
      3) if ((k < 12)); then sx "$TMP/s.wav" -b 24 "$base.flac" rate -v 16000; else sx "$TMP/s.wav" "$base.flac" rate -v 16000; fi ;;
      4) if ((k < 12)); then sx "$TMP/s.wav" -e floating-point -b 32 "$base.wav" rate -v 16000; else sx "$TMP/s.wav" "$base.flac" rate -v 16000; fi ;;
      5) if ((k < 12)); then sx "$TMP/s.wav" -c 2 "$base.flac" rate -v 44100; else sx "$TMP/s.wav" "$base.flac" rate -v 16000; fi ;;
    esac
    k=$((k + 1))
  done
done

# Spoof 2: espeak-ng pt-BR Klatt variants, mostly through a telephone channel (8 kHz,
# 300-3400 Hz) and lossy codecs (MP3, Ogg Vorbis), some left wideband.
k=0
for voice in klatt klatt2 klatt3 klatt4 klatt6; do
  mkdir -p "$OUT/tts_espeak_klatt/$voice"
  for ((j = 0; j < 6; j++)); do
    idx=$(((15 + k * 11) % ${#PT[@]}))
    text=${PT[$idx]}
    base="$OUT/tts_espeak_klatt/$voice/$(printf '%02d' "$idx")"
    say "pt-br+$voice" "$text" "$TMP/s.wav" "$(level "$((k + 3))")"
    if ((k % 5 == 4)); then
      ff "$TMP/s.wav" -ac 1 -c:a libmp3lame -b:a 48k "$base.mp3"
    else
      sx "$TMP/s.wav" "$TMP/tel.wav" sinc 300-3400 rate -v 8000
      case $((k % 3)) in
        0) sx "$TMP/tel.wav" "$base.flac" ;;
        1) sx "$TMP/tel.wav" "$TMP/up.wav" rate -v 16000
           ff "$TMP/up.wav" -ac 1 -c:a libmp3lame -b:a 32k "$base.mp3" ;;
        2) sx "$TMP/tel.wav" "$TMP/up.wav" rate -v 16000
           ff "$TMP/up.wav" -ac 1 -c:a libvorbis -q:a 2 "$base.ogg" ;;
      esac
    fi
    k=$((k + 1))
  done
done

# Spoof 3: espeak-ng in the languages of the real prompts (and European Portuguese), IVR-like
# texts, at 8 kHz like the asterisk prompts (every fifth clip a 16-bit WAV, like them); two
# clips wideband stereo.
k=0
while IFS=$'\t' read -r lang text; do
  case $lang in
    en-us) voice=en-us+f3 ;; es) voice=es+m2 ;; fr) voice=fr+f1 ;;
    it) voice=it+m4 ;; ru) voice=ru+m7 ;; pt) voice=pt+m5 ;;
  esac
  folder=${voice//+/_}
  mkdir -p "$OUT/tts_espeak_multilang/$folder"
  base="$OUT/tts_espeak_multilang/$folder/$(printf '%02d' "$k")"
  say "$voice" "$text" "$TMP/s.wav" "$(level "$((k + 5))")"
  if ((k == 7 || k == 22)); then
    sx "$TMP/s.wav" -c 2 "$base.flac" rate -v 16000
  elif ((k % 5 == 2)); then
    sx "$TMP/s.wav" -b 16 "$base.wav" rate -v 8000
  else
    sx "$TMP/s.wav" "$base.flac" rate -v 8000
  fi
  k=$((k + 1))
done < "$TMP/multi.txt"

# ----------------------------------------------------------------------------------------------
echo "demo corpus written to $OUT:"
for d in "$OUT"/*/; do
  printf '  %-24s %3d files\n' "$(basename "$d")" "$(find "$d" -type f | wc -l)"
done
du -sh "$OUT" | awk '{print "  total " $1}'
