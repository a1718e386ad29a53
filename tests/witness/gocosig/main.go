// gocosig: checks a checkpoint carrying witness cosignatures with Go's reference
// signed-note code (golang.org/x/mod/sumdb/note's note.Open), given the log's
// verifier key and witness cosignature/v1 keys (c2sp.org/tlog-cosignature, type 0x04).
//
// note.Open takes any note.Verifier: the cosignature verifier here is written from the
// spec alone (as torchwood's NewCosignatureVerifier is): the signature is an 8-byte
// big-endian timestamp then Ed25519 over "cosignature/v1\ntime <ts>\n" + the note text.
//
// usage: gocosig NOTE_FILE LOG_VKEY WITNESS_VKEY...
// prints "verified <name>" per verified signature, "timestamp <name> <ts>" per
// cosignature; exit 0 ok, 1 verification failure, 2 usage or I/O error.
package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

type cosigVerifier struct {
	name  string
	hash  uint32
	key   ed25519.PublicKey
	times map[string]uint64
}

func (v *cosigVerifier) Name() string    { return v.name }
func (v *cosigVerifier) KeyHash() uint32 { return v.hash }
func (v *cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig[:8])
	if ts > 1<<63-1 {
		return false
	}
	m := []byte("cosignature/v1\ntime " + strconv.FormatUint(ts, 10) + "\n")
	m = append(m, msg...)
	if !ed25519.Verify(v.key, m, sig[8:]) {
		return false
	}
	v.times[v.name] = ts
	return true
}

func newCosigVerifier(vkey string, times map[string]uint64) (*cosigVerifier, error) {
	parts := strings.SplitN(strings.TrimSpace(vkey), "+", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("malformed witness vkey")
	}
	name, hash16, key64 := parts[0], parts[1], parts[2]
	key, err := base64.StdEncoding.DecodeString(key64)
	if err != nil || len(key) != 1+ed25519.PublicKeySize || key[0] != 0x04 {
		return nil, fmt.Errorf("witness vkey %s: not an Ed25519 cosignature/v1 key", name)
	}
	h := sha256.Sum256(append([]byte(name+"\n"), key...))
	want := binary.BigEndian.Uint32(h[:4])
	raw, err := hex.DecodeString(hash16)
	if err != nil || len(raw) != 4 || binary.BigEndian.Uint32(raw) != want {
		return nil, fmt.Errorf("witness vkey %s: key hash does not match", name)
	}
	return &cosigVerifier{name: name, hash: want, key: ed25519.PublicKey(key[1:]), times: times}, nil
}

func read(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	return string(data)
}

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: gocosig NOTE_FILE LOG_VKEY WITNESS_VKEY...")
		os.Exit(2)
	}
	msg := []byte(read(os.Args[1]))
	logV, err := note.NewVerifier(strings.TrimSpace(read(os.Args[2])))
	if err != nil {
		fmt.Fprintln(os.Stderr, "log vkey:", err)
		os.Exit(2)
	}
	verifiers := []note.Verifier{logV}
	times := map[string]uint64{}
	for _, path := range os.Args[3:] {
		v, err := newCosigVerifier(read(path), times)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		verifiers = append(verifiers, v)
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		fmt.Fprintln(os.Stderr, "note.Open:", err)
		os.Exit(1)
	}
	for _, s := range n.Sigs {
		fmt.Println("verified", s.Name)
	}
	for _, s := range n.UnverifiedSigs {
		fmt.Println("unverified", s.Name)
	}
	for name, ts := range times {
		fmt.Println("timestamp", name, ts)
	}
}
