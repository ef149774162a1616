// Package mesh declares peer identity types shaped like the mesh library's,
// in a package of the same name so that gob's type strings (for example
// "[]mesh.PeerName") come out as they do in Weave.
package mesh

// PeerName is a 48-bit peer name held in a uint64.
type PeerName uint64

// PeerUID is a random per-start peer id.
type PeerUID uint64

// PeerShortID is a 12-bit short peer id.
type PeerShortID uint16
