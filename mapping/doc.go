// Package mapping holds the address mappings a SIIT-DC border relay consults:
// the Explicit Address Mapping table of RFC 7757 and the IPv4-embedded IPv6
// prefix of RFC 6052. Tables are immutable once built; a Store swaps whole
// snapshots atomically so that a reload never blocks or tears the packet path.
package mapping
