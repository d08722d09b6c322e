package netsetup

import (
	"bytes"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Names of netdev features in the ethtool string set ETH_SS_FEATURES
// (netdev_features_strings, net/ethtool/common.c), as `ethtool -k` prints
// them.
const (
	// FeatureGRO is generic receive offload: the driver merges the
	// segments of a TCP stream into one super-packet before the stack
	// routes it.
	FeatureGRO = "rx-gro"
	// FeatureUDPGROForwarding lets GRO also merge UDP datagrams that are
	// forwarded rather than delivered to a local socket (Linux >= 5.12)
	// into one UDP super-packet (SKB_GSO_UDP_L4). A tun that accepts
	// USO (TUN_F_USO4/6) passes it to the translator in one read.
	FeatureUDPGROForwarding = "rx-udp-gro-forwarding"
)

// ethSSFeatures is ETH_SS_FEATURES (include/uapi/linux/ethtool.h), the
// string set that names the bits of the ETHTOOL_[GS]FEATURES words.
const ethSSFeatures = 4

// ethGStringLen is ETH_GSTRING_LEN: each name is NUL-padded to 32 bytes.
const ethGStringLen = 32

// ethtoolIfreq is struct ifreq with ifr_data, for SIOCETHTOOL.
type ethtoolIfreq struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtool runs one SIOCETHTOOL command on dev; req points to the
// command's struct, which starts with its u32 cmd. The kernel answers
// ETHTOOL_SFEATURES with a positive value (ETHTOOL_F_* bits) when it could
// not do all it was asked; that is returned as ret.
func ethtool(dev string, req unsafe.Pointer) (ret uintptr, err error) {
	if len(dev) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long", dev)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	var ifr ethtoolIfreq
	copy(ifr.name[:], dev)
	ifr.data = req
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&ifr)
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// featureIndex returns the bit numbers of the named features on dev, from
// the kernel's ETH_SS_FEATURES string set, so that nothing depends on the
// kernel's netdev_features_t layout. A name the kernel does not know is
// missing from the map.
func featureIndex(dev string) (map[string]int, int, error) {
	var info struct {
		cmd, reserved uint32
		mask          uint64
		count         uint32
	}
	info.cmd, info.mask = unix.ETHTOOL_GSSET_INFO, 1<<ethSSFeatures
	if _, err := ethtool(dev, unsafe.Pointer(&info)); err != nil {
		return nil, 0, fmt.Errorf("%s: ETHTOOL_GSSET_INFO: %w", dev, err)
	}
	n := int(info.count)
	if info.mask&(1<<ethSSFeatures) == 0 || n == 0 || n > 4096 {
		return nil, 0, fmt.Errorf("%s: the kernel names no netdev features", dev)
	}
	buf := make([]byte, 12+n*ethGStringLen)
	*(*uint32)(unsafe.Pointer(&buf[0])) = unix.ETHTOOL_GSTRINGS
	*(*uint32)(unsafe.Pointer(&buf[4])) = ethSSFeatures
	*(*uint32)(unsafe.Pointer(&buf[8])) = uint32(n)
	if _, err := ethtool(dev, unsafe.Pointer(&buf[0])); err != nil {
		return nil, 0, fmt.Errorf("%s: ETHTOOL_GSTRINGS: %w", dev, err)
	}
	idx := make(map[string]int, n)
	for i := range n {
		s := buf[12+i*ethGStringLen : 12+(i+1)*ethGStringLen]
		if j := bytes.IndexByte(s, 0); j >= 0 {
			s = s[:j]
		}
		idx[string(s)] = i
	}
	return idx, n, nil
}

// featureBlock is struct ethtool_get_features_block.
type featureBlock struct{ available, requested, active, neverChanged uint32 }

// getFeatures reads ETHTOOL_GFEATURES for n feature bits.
func getFeatures(dev string, n int) ([]featureBlock, error) {
	words := (n + 31) / 32
	buf := make([]uint32, 2+4*words)
	buf[0], buf[1] = unix.ETHTOOL_GFEATURES, uint32(words)
	if _, err := ethtool(dev, unsafe.Pointer(&buf[0])); err != nil {
		return nil, fmt.Errorf("%s: ETHTOOL_GFEATURES: %w", dev, err)
	}
	blocks := make([]featureBlock, words)
	for i := range blocks {
		b := buf[2+4*i:]
		blocks[i] = featureBlock{b[0], b[1], b[2], b[3]}
	}
	return blocks, nil
}

// Features returns whether each named feature is active on dev. Names the
// kernel does not know are missing from the result.
func (n *Netlink) Features(dev string, names []string) (map[string]bool, error) {
	idx, count, err := featureIndex(dev)
	if err != nil {
		return nil, err
	}
	blocks, err := getFeatures(dev, count)
	if err != nil {
		return nil, err
	}
	res := map[string]bool{}
	for _, name := range names {
		if i, ok := idx[name]; ok {
			res[name] = blocks[i/32].active&(1<<(i%32)) != 0
		}
	}
	return res, nil
}

// SetFeatures switches the named features on dev on or off. A feature the
// kernel does not know, or that dev cannot change (fixed, like GRO on a
// device without it), is an error naming it; the others are still set.
func (n *Netlink) SetFeatures(dev string, want map[string]bool) error {
	idx, count, err := featureIndex(dev)
	if err != nil {
		return err
	}
	blocks, err := getFeatures(dev, count)
	if err != nil {
		return err
	}
	words := len(blocks)
	buf := make([]uint32, 2+2*words) // struct ethtool_sfeatures: valid, requested per word
	buf[0], buf[1] = unix.ETHTOOL_SFEATURES, uint32(words)
	var bad []string
	for name, on := range want {
		i, ok := idx[name]
		if !ok {
			bad = append(bad, name+" (unknown to this kernel)")
			continue
		}
		w, bit := i/32, uint32(1)<<(i%32)
		if blocks[w].available&bit == 0 {
			if (blocks[w].active&bit != 0) != on {
				bad = append(bad, name+" (fixed)")
			}
			continue
		}
		buf[2+2*w] |= bit
		if on {
			buf[3+2*w] |= bit
		}
	}
	if _, err := ethtool(dev, unsafe.Pointer(&buf[0])); err != nil {
		return fmt.Errorf("%s: ETHTOOL_SFEATURES: %w", dev, err)
	}
	// The kernel reports requests it could not honour (ETHTOOL_F_WISH)
	// in its return value; reading back names them.
	got, err := n.Features(dev, slices.Collect(maps.Keys(want)))
	if err != nil {
		return err
	}
	for name, on := range want {
		if v, ok := got[name]; ok && v != on && !slices.ContainsFunc(bad, func(b string) bool { return strings.HasPrefix(b, name+" ") }) {
			bad = append(bad, name+" (refused)")
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("%s: cannot set features %v", dev, bad)
	}
	return nil
}
