# bench/netns: map646 serving an inherited fd. The harness opens a tun
# (IFF_TUN|IFF_NO_PI, and as a VM manager opens a VM's tap IFF_VNET_HDR with
# a 12-byte header and offloads; map646-fd-plain: without them) in the
# router namespace, routes the public IPv4 prefix and the /96 into it and
# hands it to map646 as fd {{.FD}} (map646-fd-2q: a two-queue tun, fds
# {{.FD}} onwards). map646 asks the fd for its framing: no vnet_hdr here.
# The link block is docs/configuration.md's "Link modes"; a binary that
# rejects it is reported as unsupported.
translator {
  prefix = "{{.Prefix}}"
{{- if .MappingsFile}}
  mappings_file = "{{.MappingsFile}}"
{{- else}}
  mapping {
    ipv4 = "{{.Public4}}"
    ipv6 = "{{.Server6}}"
  }
{{- end}}
  ipv4_mtu = {{.IPv4MTU}}
  ipv6_mtu = {{.IPv6MTU}}
  fd {
    fd = {{.FD}}
{{- if gt .FDQueues 1}}
    queues = {{.FDQueues}}
{{- end}}
  }
}
