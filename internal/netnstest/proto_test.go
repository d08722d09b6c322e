package netnstest

import (
	"os"
	"path/filepath"
	"testing"
)

// TestProtoNameAndNumericProto: a host that names protocol 64 in
// iproute2's files (the docs suggest "64 map646" in rt_protos.d) gets
// "proto 64" back in ip's output, which the netns tests compare with;
// other protocols and look-alike names are left alone.
func TestProtoNameAndNumericProto(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := write("rt_protos", "# reserved\n3\tboot\n4 static\n")
	dec := write("a.conf", "64 map646 # the translator\n")
	hex := write("b.conf", "0x40\tsiit\n")
	for _, c := range []struct {
		files []string
		want  string
	}{
		{[]string{base}, ""},
		{[]string{base, dec}, "map646"},
		{[]string{base, dec, hex}, "siit"}, // the last one wins
		{[]string{base, filepath.Join(dir, "missing.conf")}, ""},
	} {
		if got := protoName(c.files, 64); got != c.want {
			t.Errorf("protoName(%v) = %q; want %q", c.files, got, c.want)
		}
	}
	for _, c := range []struct{ out, name, want string }{
		{"198.51.100.7 dev dm0 proto map646 scope link \n", "map646", "198.51.100.7 dev dm0 proto 64 scope link \n"},
		{"6460:\tfrom all lookup 646 proto map646\n6463:\tfrom all unreachable proto map646", "map646",
			"6460:\tfrom all lookup 646 proto 64\n6463:\tfrom all unreachable proto 64"},
		{"6460:\tfrom all lookup 646 proto map6466\n", "map646", "6460:\tfrom all lookup 646 proto map6466\n"},
		{"6460:\tfrom 2001:db8::/32 lookup 646 proto boot\n", "map646", "6460:\tfrom 2001:db8::/32 lookup 646 proto boot\n"},
		{"198.51.100.7 dev dm0 proto 64 scope link \n", "", "198.51.100.7 dev dm0 proto 64 scope link \n"},
	} {
		if got := numericProto(c.out, c.name); got != c.want {
			t.Errorf("numericProto(%q, %q) = %q; want %q", c.out, c.name, got, c.want)
		}
	}
}
