// Package mapping holds the address mappings a SIIT-DC border relay consults:
// the Explicit Address Mapping table of RFC 7757 and the IPv4-embedded IPv6
// prefix of RFC 6052. Tables are immutable once built, so that the
// translator can swap whole snapshots atomically and a reload never blocks or
// tears the packet path.
//
// The pieces:
//
//   - Prefix: an RFC 6052 prefix (/32../96) with Embed and Extract.
//   - Table: the EAM table, built by NewTable from Entry values, with
//     longest-prefix Lookup4 and Lookup6 that do not allocate. A refused
//     entry comes back as an *EntryError carrying its index, so a
//     configuration layer can point at the line it came from.
//   - Snapshot: a prefix and a table checked together (NewSnapshot), with
//     To6 and To4, the two per-address operations of the translator, and
//     Prefetch, which warms the table slots a batch of packets will look
//     up so that a large table's cache misses overlap. Large tables keep
//     their arrays on huge pages where the kernel offers them.
//   - ParseCSVLines reads a mappings file.
//   - Aggregate4 reduces the IPv4 sides of the table to the fewest prefixes,
//     for routes.
//   - IsGlobal4 tells which IPv4 addresses the well-known prefix may carry
//     (RFC 6052 section 3.1).
//
// Every lookup result carries a checksum delta, sum(v6) - sum(v4) in ones'
// complement arithmetic, so that the translator can update transport
// checksums incrementally (RFC 1624) instead of summing the payload.
package mapping
