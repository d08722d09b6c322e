package main

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"
)

// Setup keys: the columns a run can compare, in their default order.
const (
	sNative6   = "native6"
	sNative4   = "native4"
	sTayga     = "tayga"      // Debian's TAYGA 0.9.2
	sTaygaFork = "tayga-fork" // apalrd/tayga, multi-queue (-tayga-fork PATH)
	sMap646    = "map646"     // host mode: map646's own tun, the kernel routes
	sMap646M1  = "map646-1m"  // host mode with the large table (-mappings)
	// sMap646AA is map646 again, one mapping, host mode: the A/A twin
	// that runs beside map646-1m and is judged as it is, so that a run's
	// verdicts on the 1M rows come with the verdicts the same method gives
	// when nothing differs (the noise of the method, measured in that run).
	sMap646AA  = "map646-aa"
	sMap646NIC = "map646-nic" // AF_PACKET on the router's veths, kernel forwarding off
	sMap646FD  = "map646-fd"  // a tun opened by the harness as a VM manager would (IFF_VNET_HDR, offloads), inherited as fd 3
	// sMap646FD2 is map646-fd with a two-queue tun (IFF_MULTI_QUEUE),
	// inherited as fds 3 and 4 (`queues = 2`).
	sMap646FD2 = "map646-fd-2q"
	// sMap646FDPlain is map646-fd on a tun without a virtio_net_hdr
	// (IFF_TUN|IFF_NO_PI only): every packet crosses alone, as all fd
	// setups did before map646 read the header.
	sMap646FDPlain = "map646-fd-plain"
	// sTunEcho is native IPv6 forwarding with a detour through a tun
	// whose reader writes every packet back unchanged (bench/tunecho):
	// the floor of any tun translator.
	sTunEcho = "tun-echo"
	// sTunEchoURing is tun-echo with the echo's io_uring loop (-uring):
	// one io_uring_enter per packet, as map646's queue loop submits.
	sTunEchoURing = "tun-echo-uring"
	// sPktEcho is native IPv6 moved between the router's veths by
	// bench/pktecho on AF_PACKET sockets, the router's forwarding off:
	// the floor of NIC mode. sPktEchoTx sends through a PACKET_TX_RING.
	sPktEcho   = "pkt-echo"
	sPktEchoTx = "pkt-echo-txring"
)

// linkMode is how a map646 setup is attached to the router namespace: the
// HCL template it renders and what the harness prepares around the process.
// A new link mode of the daemon needs one template file and one entry here.
type linkMode struct {
	Name     string // "tun", "nic", "fd"
	Template string // file name under templates/
	// Optional modes may be missing from the binary under test: when
	// `map646 check` rejects their configuration, the setup is reported
	// as unsupported instead of failing the run.
	Optional bool
	// NoForwarding turns the router namespace's kernel forwarding off while
	// the translator runs: in NIC mode only the translator moves transit
	// packets, and the kernel must not forward (or duplicate) them.
	NoForwarding bool
	// PassTun: the harness opens a tun in the router namespace, routes the
	// public IPv4 prefix and the /96 into it and hands it over as fd 3.
	PassTun bool
	// TunQueues: with PassTun, the tun's queues (IFF_MULTI_QUEUE when
	// more than 1), handed over as fd 3 onwards; 0 means 1.
	TunQueues int
	// VnetHdr: with PassTun, the tun is opened with IFF_VNET_HDR and a
	// virtio_net_hdr of this size (TUNSETVNETHDRSZ) and its offloads set
	// (TUNSETOFFLOAD), as QEMU and Firecracker open a VM's tap; 0: a
	// bare-IP tun without them.
	VnetHdr int
}

var (
	modeTun     = linkMode{Name: "tun", Template: "map646-tun.hcl"}
	modeNIC     = linkMode{Name: "nic", Template: "map646-nic.hcl", Optional: true, NoForwarding: true}
	modeFD      = linkMode{Name: "fd", Template: "map646-fd.hcl", Optional: true, PassTun: true, VnetHdr: vmVnetHdr}
	modeFD2     = linkMode{Name: "fd", Template: "map646-fd.hcl", Optional: true, PassTun: true, TunQueues: 2, VnetHdr: vmVnetHdr}
	modeFDPlain = linkMode{Name: "fd", Template: "map646-fd.hcl", Optional: true, PassTun: true}
)

// vmVnetHdr is the virtio_net_hdr size QEMU and Firecracker set on the
// taps they open (struct virtio_net_hdr_v1, with num_buffers).
const vmVnetHdr = 12

//go:embed templates/*.hcl
var templateFS embed.FS

// templateData is what a map646 template may use.
type templateData struct {
	Prefix, Public4, Server6 string
	MappingsFile             string // "": one mapping block with Public4 = Server6
	IPv4MTU, IPv6MTU         int
	Tun                      string // tun name (host mode)
	IPv4If, IPv6If           string // the router namespace's veths (NIC mode)
	FD                       int    // inherited descriptor (fd mode)
	FDQueues                 int    // fd mode: descriptors FD onwards, one per tun queue
}

// passedFD is the descriptor number the inherited tun gets in map646: the
// first of exec.Cmd.ExtraFiles.
const passedFD = 3

func newTemplateData(csv string) templateData {
	return templateData{Prefix: prefix6, Public4: public4, Server6: server6, MappingsFile: csv,
		IPv4MTU: mtu4, IPv6MTU: mtu6, Tun: map646Tun, IPv4If: router4If, IPv6If: router6If, FD: passedFD, FDQueues: 1}
}

// renderTemplate fills the HCL template src (its name is for errors only).
func renderTemplate(name, src string, d templateData) (string, error) {
	t, err := template.New(name).Option("missingkey=error").Parse(src)
	if err != nil {
		return "", fmt.Errorf("template %s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("template %s: %w", name, err)
	}
	return b.String(), nil
}

// templateSource returns the template for mode: the file given with
// -template MODE=FILE, else the embedded one.
func templateSource(mode linkMode, overrides map[string]string) (name, src string, err error) {
	if p, ok := overrides[mode.Name]; ok {
		b, err := os.ReadFile(p)
		return p, string(b), err
	}
	b, err := templateFS.ReadFile("templates/" + mode.Template)
	return mode.Template, string(b), err
}

// parseTemplateFlags reads -template values "MODE=FILE" (comma-separated).
func parseTemplateFlags(v string) (map[string]string, error) {
	out := map[string]string{}
	if v == "" {
		return out, nil
	}
	known := map[string]bool{modeTun.Name: true, modeNIC.Name: true, modeFD.Name: true}
	for _, kv := range strings.Split(v, ",") {
		k, p, ok := strings.Cut(kv, "=")
		if !ok || !known[k] || p == "" {
			return nil, fmt.Errorf("-template %q: want MODE=FILE with MODE one of tun, nic, fd", kv)
		}
		out[k] = p
	}
	return out, nil
}

// defaultSetups is the run order without -setups: the TAYGA fork only
// when its binary is given.
func defaultSetups(taygaFork string) []string {
	s := []string{sNative6, sNative4, sTayga}
	if taygaFork != "" {
		s = append(s, sTaygaFork)
	}
	return append(s, sMap646, sMap646M1, sMap646NIC, sMap646FD)
}

var knownSetups = []string{sNative6, sNative4, sTayga, sTaygaFork, sMap646, sMap646M1, sMap646AA, sMap646NIC, sMap646FD, sMap646FD2, sMap646FDPlain, sTunEcho, sTunEchoURing, sPktEcho, sPktEchoTx}

// taygaForkWorkers is the fork's `workers` setting: one thread and tun
// queue per core of the 2-core machines this runs on.
const taygaForkWorkers = 2

// buildSetups turns setup keys into setups with their translators.
func buildSetups(o options, dir string) ([]setup, error) {
	var out []setup
	seen := map[string]bool{}
	m646 := func(k, label string, mode linkMode, n int) setup {
		return setup{Key: k, Label: label, Dst: public4, Mode: &mode,
			xlat: &map646Translator{bin: o.Map646, dir: dir, mappings: n, name: k, limit: o.StartTimeout, mode: mode, templates: o.Templates}}
	}
	for _, k := range o.Setups {
		if seen[k] {
			return nil, fmt.Errorf("setup %q given twice", k)
		}
		seen[k] = true
		switch k {
		case sNative6:
			out = append(out, setup{Key: k, Label: "native IPv6", Dst: server6})
		case sNative4:
			out = append(out, setup{Key: k, Label: "native IPv4", Dst: server4})
		case sTayga:
			out = append(out, setup{Key: k, Label: "TAYGA 0.9.2", Dst: public4, xlat: &taygaTranslator{bin: o.Tayga, dir: dir, tun: taygaTun}})
		case sTaygaFork:
			if o.TaygaFork == "" {
				return nil, fmt.Errorf("setup %q needs -tayga-fork PATH", k)
			}
			out = append(out, setup{Key: k, Label: fmt.Sprintf("TAYGA fork, %d workers", taygaForkWorkers), Dst: public4,
				xlat: &taygaTranslator{bin: o.TaygaFork, dir: dir, tun: taygaForkTun, workers: taygaForkWorkers}})
		case sMap646:
			out = append(out, m646(k, "map646 tun", modeTun, 1))
		case sMap646M1:
			label := fmt.Sprintf("map646 tun, %s mappings", countLabel(o.Mappings))
			if o.Mappings == 1 {
				// -mappings 1: the A/A run that measures the noise of the
				// 1M comparison; it has to be told from the real one.
				label = "map646 tun, 1 mapping (A/A)"
			}
			out = append(out, m646(k, label, modeTun, o.Mappings))
		case sMap646AA:
			out = append(out, m646(k, "map646 tun, A/A twin", modeTun, 1))
		case sMap646NIC:
			out = append(out, m646(k, "map646 NIC (AF_PACKET)", modeNIC, 1))
		case sMap646FD:
			out = append(out, m646(k, "map646 fd", modeFD, 1))
		case sMap646FD2:
			out = append(out, m646(k, "map646 fd, 2-queue tun", modeFD2, 1))
		case sMap646FDPlain:
			out = append(out, m646(k, "map646 fd, no vnet header", modeFDPlain, 1))
		case sTunEcho, sTunEchoURing:
			if o.TunEcho == "" {
				return nil, fmt.Errorf("setup %q needs the bench/tunecho binary (-tun-echo PATH)", k)
			}
			label, uring := "tun echo (IPv6)", k == sTunEchoURing
			if uring {
				label = "tun echo, io_uring (IPv6)"
			}
			out = append(out, setup{Key: k, Label: label, Dst: server6,
				xlat: &tunEchoTranslator{bin: o.TunEcho, dir: dir, queues: tunEchoQueues, uring: uring}})
		case sPktEcho, sPktEchoTx:
			if o.PktEcho == "" {
				return nil, fmt.Errorf("setup %q needs the bench/pktecho binary", k)
			}
			label := "AF_PACKET echo (IPv6)"
			if k == sPktEchoTx {
				label = "AF_PACKET echo, TX ring (IPv6)"
			}
			out = append(out, setup{Key: k, Label: label, Dst: server6,
				xlat: &pktEchoTranslator{bin: o.PktEcho, dir: dir, txRing: k == sPktEchoTx}})
		default:
			return nil, fmt.Errorf("unknown setup %q (known: %s)", k, strings.Join(knownSetups, ", "))
		}
	}
	return out, nil
}

// checkSupport asks the binary whether it accepts each optional link
// mode's configuration (`map646 check`, which touches nothing on the
// system). Setups it rejects are returned with the reason and left out of
// the run; a rejected configuration of a non-optional mode is an error.
func checkSupport(ctx context.Context, setups []setup, bin, dir string, overrides map[string]string) (kept []setup, unsupported map[string]string, err error) {
	unsupported = map[string]string{}
	verdict := map[string]string{} // mode -> "" (accepted) or the reason
	for _, s := range setups {
		if s.Mode == nil {
			kept = append(kept, s)
			continue
		}
		key := fmt.Sprintf("%s/%d", s.Mode.Name, s.Mode.TunQueues) // fd and fd with queues differ
		reason, done := verdict[key]
		if !done {
			name, src, err := templateSource(*s.Mode, overrides)
			if err != nil {
				return nil, nil, err
			}
			data := newTemplateData("")
			data.FDQueues = max(1, s.Mode.TunQueues)
			conf, err := renderTemplate(name, src, data)
			if err != nil {
				return nil, nil, err
			}
			p := filepath.Join(dir, fmt.Sprintf("check-%s-%d.hcl", s.Mode.Name, s.Mode.TunQueues))
			if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
				return nil, nil, err
			}
			out, cerr := run(ctx, bin, "check", "-c", p)
			if cerr != nil {
				if ctx.Err() != nil {
					return nil, nil, ctx.Err()
				}
				reason = firstLine(out)
				if reason == "" {
					reason = cerr.Error()
				}
				if !s.Mode.Optional {
					return nil, nil, fmt.Errorf("map646 check rejects the %s-mode configuration: %s", s.Mode.Name, strings.TrimSpace(out))
				}
			}
			verdict[key] = reason
		}
		if reason != "" {
			unsupported[s.Key] = reason
			continue
		}
		kept = append(kept, s)
	}
	return kept, unsupported, nil
}

// firstLine is the first non-empty line of s, trimmed.
func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}
