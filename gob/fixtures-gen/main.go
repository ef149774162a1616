// Command fixtures-gen writes gob fixtures with Go's own encoding/gob for the
// weave-gob crate's tests. The types below are declared for this purpose with
// the field names, field types and type names of the values Weave Net 2.8.1
// and the mesh library put on the wire.
//
// Usage: go run . <output dir>
//
// Each fixture is produced in a fresh child process so that gob's
// process-wide type ids start at 65, as they do for the first values a new
// process encodes.
package main

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"weavegobfixtures/mesh"
)

// --- mesh-shaped values ---

type peerSummary struct {
	NameByte   []byte
	NickName   string
	UID        mesh.PeerUID
	Version    uint64
	ShortID    mesh.PeerShortID
	HasShortID bool
}

type connectionSummary struct {
	NameByte      []byte
	RemoteTCPAddr string
	Outbound      bool
	Established   bool
}

// --- IPAM-shaped values ---

type Address uint32

type Range struct {
	Start, End Address
}

type entry struct {
	Token   Address
	Peer    mesh.PeerName
	Version uint32
	Free    uint32
}

type entries []*entry

type Ring struct {
	Start, End Address
	Peer       mesh.PeerName
	Entries    entries
	Seeds      []mesh.PeerName
	onUpdate   func()
}

type NodeID struct {
	Name mesh.PeerName
	UID  mesh.PeerUID
}

type ProposalID struct {
	Round    uint
	Proposer NodeID
}

type Value []mesh.PeerName

type AcceptedValue struct {
	Value  Value
	Origin ProposalID
}

type NodeClaims struct {
	Promise     ProposalID
	Accepted    ProposalID
	AcceptedVal AcceptedValue
}

type GossipState map[NodeID]NodeClaims

type gossipState struct {
	Now       int64
	Nicknames map[mesh.PeerName]string
	Paxos     GossipState
	Ring      *Ring
}

// --- DNS-shaped values (the nameserver gossip channel) ---

type Entry struct {
	ContainerID string
	Origin      mesh.PeerName
	Addr        Address
	Hostname    string
	lHostname   string
	Version     int
	Tombstone   int64
}

type Entries []Entry

type GossipData struct {
	Timestamp int64
	Entries
}

// --- general codec coverage ---

type inner struct {
	A int
	B string
}

type allKinds struct {
	B          bool
	I          int
	I8         int8
	U          uint
	U16        uint16
	F          float64
	F32        float32
	C          complex128
	S          string
	Bs         []byte
	Arr        [3]int
	Sl         []string
	Nested     inner
	PNested    *inner
	M          map[string]int
	SlS        []inner
	Iface      interface{}
	unexported int
}

type tree struct {
	Label string
	Kids  []tree
}

type stamped struct {
	When time.Time
	N    int
}

// --- helpers ---

// encodeAll writes values on one encoder.
func encodeAll(values ...interface{}) []byte {
	var buf bytes.Buffer
	enc := gob.NewEncoder(&buf)
	for _, v := range values {
		if err := enc.Encode(v); err != nil {
			panic(err)
		}
	}
	return buf.Bytes()
}

// inOrder retries an encoding until the marker byte strings appear in the
// given order, so that fixtures with several map entries hold them in key
// order (Go iterates maps in a random order; the Rust side writes key order).
func inOrder(markers [][]byte, f func() []byte) []byte {
	for i := 0; i < 10000; i++ {
		b := f()
		last := -1
		ok := true
		for _, m := range markers {
			at := bytes.Index(b, m)
			if at <= last {
				ok = false
				break
			}
			last = at
		}
		if ok {
			return b
		}
	}
	panic("map order never matched")
}

// strMarker is how a map key string appears: its length byte then its bytes.
func strMarker(s string) []byte { return append([]byte{byte(len(s))}, s...) }

// uintMarker is gob's encoding of a uint with 8 significant bytes.
func uintMarker(x uint64) []byte {
	b := []byte{0xf8}
	for i := 7; i >= 0; i-- {
		b = append(b, byte(x>>(8*uint(i))))
	}
	return b
}

func features() map[string]string {
	return map[string]string{
		"ConnID":          "1234567890",
		"Name":            "00:00:00:00:00:01",
		"NickName":        "host-a",
		"Overlays":        "fastdp sleeve",
		"PeerNameFlavour": "mac",
		"ShortID":         "17",
		"Trusted":         "false",
		"UID":             "9876543210123456789",
	}
}

func sortedMarkers(m map[string]string) [][]byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out [][]byte
	for _, k := range keys {
		out = append(out, strMarker(k))
	}
	return out
}

func ring1() *Ring {
	return &Ring{
		Start: 0x0a200000,
		End:   0x0a300000,
		Peer:  0x0000000000a1,
		Entries: entries{
			{Token: 0x0a200000, Peer: 0x0000000000a1, Version: 3, Free: 524288},
			{Token: 0x0a280000, Peer: 0x0000000000b2, Version: 0, Free: 0},
			{Token: 0x0a2c0000, Peer: 0xffeeddccbbaa, Version: 4294967295, Free: 1},
		},
		Seeds: []mesh.PeerName{0x0000000000a1, 0x0000000000b2},
	}
}

const uidA = 0x1111111111111111
const uidB = 0x2222222222222222

func claims() GossipState {
	a := NodeID{Name: 0xa1, UID: uidA}
	b := NodeID{Name: 0xb2, UID: uidB}
	return GossipState{
		a: {
			Promise:     ProposalID{Round: 2, Proposer: b},
			Accepted:    ProposalID{Round: 2, Proposer: b},
			AcceptedVal: AcceptedValue{Value: Value{0xa1, 0xb2}, Origin: ProposalID{Round: 2, Proposer: b}},
		},
		b: {
			Promise: ProposalID{Round: 2, Proposer: b},
		},
	}
}

// fixtures maps a file name to the function producing its bytes.
var fixtures = map[string]func() []byte{
	// The features map of the connection handshake.
	"features_empty": func() []byte { m := map[string]string{}; return encodeAll(&m) },
	"features_one": func() []byte {
		m := map[string]string{"PeerNameFlavour": "mac"}
		return encodeAll(&m)
	},
	"features_full": func() []byte {
		m := features()
		return inOrder(sortedMarkers(m), func() []byte { return encodeAll(&m) })
	},

	// Gossip envelopes: separate values on one encoder.
	"envelope_gossip": func() []byte {
		return encodeAll("topology", mesh.PeerName(0x0000000000a1), []byte{1, 2, 3, 250})
	},
	"envelope_unicast": func() []byte {
		return encodeAll("IPallocation", mesh.PeerName(0x0000000000a1), mesh.PeerName(0xffeeddccbbaa), []byte("payload"))
	},
	"envelope_broadcast_zero": func() []byte {
		return encodeAll("", mesh.PeerName(0), []byte{})
	},

	// Topology gossip: peerSummary then []connectionSummary per peer.
	"topology_zero_peer": func() []byte {
		return encodeAll(peerSummary{}, []connectionSummary{})
	},
	"topology_two_peers": func() []byte {
		return encodeAll(
			peerSummary{NameByte: []byte{0, 0, 0, 0, 0, 0xa1}, NickName: "host-a", UID: 9876543210123456789, Version: 7, ShortID: 0xfff, HasShortID: true},
			[]connectionSummary{
				{NameByte: []byte{0, 0, 0, 0, 0, 0xb2}, RemoteTCPAddr: "192.168.1.2:6783", Outbound: true, Established: true},
				{NameByte: []byte{0, 0, 0, 0, 0, 0xc3}, RemoteTCPAddr: "192.168.1.3:40000"},
			},
			peerSummary{NameByte: []byte{0, 0, 0, 0, 0, 0xb2}, NickName: "host-b", UID: 1, Version: 1},
			[]connectionSummary{},
		)
	},

	// IPAM ranges and unicast messages.
	"range": func() []byte { return encodeAll(Range{Start: 0x0a200000, End: 0x0a300000}) },
	"range_zero": func() []byte { return encodeAll(Range{}) },
	"ipam_space_request": func() []byte {
		return append([]byte{0}, encodeAll(Range{Start: 0x0a200000, End: 0x0a200100})...)
	},
	"ipam_space_request_denied": func() []byte {
		return append([]byte{2}, encodeAll(Range{Start: 0x0a200000, End: 0x0a200100})...)
	},
	"ipam_ring_update": func() []byte {
		g := gossipState{Now: 1700000000, Nicknames: map[mesh.PeerName]string{0xa1: "host-a"}, Ring: ring1()}
		return append([]byte{1}, encodeAll(g)...)
	},

	// IPAM gossip state in its shapes.
	"gossip_state_zero": func() []byte { return encodeAll(gossipState{}) },
	"gossip_state_empty": func() []byte {
		return encodeAll(gossipState{Nicknames: map[mesh.PeerName]string{}})
	},
	"gossip_state_paxos_empty": func() []byte {
		return encodeAll(gossipState{Now: -1, Nicknames: map[mesh.PeerName]string{}, Paxos: GossipState{}})
	},
	"gossip_state_paxos_zero_claims": func() []byte {
		g := gossipState{Now: 1, Nicknames: map[mesh.PeerName]string{1: "x"}, Paxos: GossipState{NodeID{}: NodeClaims{}}}
		return encodeAll(g)
	},
	"gossip_state_paxos": func() []byte {
		g := gossipState{
			Now:       1700000000,
			Nicknames: map[mesh.PeerName]string{0xa1: "alpha", 0xb2: "bravo", 0xc3: "charlie"},
			Paxos:     claims(),
		}
		markers := [][]byte{strMarker("alpha"), strMarker("bravo"), strMarker("charlie"), uintMarker(uidA), uintMarker(uidB)}
		return inOrder(markers, func() []byte { return encodeAll(g) })
	},
	"gossip_state_ring": func() []byte {
		g := gossipState{Now: 1700000001, Nicknames: map[mesh.PeerName]string{0xa1: "host-a"}, Ring: ring1()}
		return encodeAll(g)
	},
	"gossip_state_empty_ring": func() []byte {
		g := gossipState{Nicknames: map[mesh.PeerName]string{}, Ring: &Ring{}}
		return encodeAll(g)
	},

	// Several values on one encoder: descriptors are sent once.
	"stream_ranges": func() []byte {
		return encodeAll(Range{Start: 1, End: 2}, Range{}, Range{Start: 0xffffffff, End: 0xffffffff})
	},
	"stream_mixed": func() []byte {
		g := gossipState{Now: 5, Nicknames: map[mesh.PeerName]string{0xa1: "host-a"}, Ring: ring1()}
		return encodeAll("IPallocation", Range{Start: 1, End: 2}, g, Range{Start: 3, End: 4}, g)
	},

	// DNS gossip.
	"dns_gossip_zero": func() []byte { return encodeAll(&GossipData{}) },
	"dns_gossip": func() []byte {
		return encodeAll(&GossipData{Timestamp: 1700000000, Entries: Entries{
			{ContainerID: "c0ffee", Origin: 0xa1, Addr: 0x0a200001, Hostname: "web.weave.local", lHostname: "web.weave.local", Version: 2},
			{ContainerID: "dead", Origin: 0xb2, Addr: 0x0a200002, Hostname: "DB.weave.local", Version: -1, Tombstone: 1700000005},
			{},
		}})
	},

	// General codec coverage.
	"all_kinds": func() []byte {
		v := allKinds{
			B: true, I: -123456789, I8: -128, U: 1 << 63, U16: 65535,
			F: 1.5, F32: 0.25, C: complex(2, -3), S: "héllo", Bs: []byte{0, 255},
			Arr: [3]int{1, -1, 0}, Sl: []string{"a", "", "c"},
			Nested: inner{A: 7, B: "in"}, PNested: &inner{}, M: map[string]int{"k": 1},
			SlS: []inner{{A: 1}, {}, {B: "z"}},
		}
		return encodeAll(v)
	},
	"all_kinds_zero": func() []byte { return encodeAll(allKinds{}) },
	"top_level_basics": func() []byte {
		return encodeAll(true, false, 0, -1, uint(300), 3.25, complex(0, 1), "", []byte(nil), []int{}, [2]bool{true, false}, map[int]bool{})
	},
	"recursive_tree": func() []byte {
		return encodeAll(tree{Label: "root", Kids: []tree{{Label: "a"}, {Label: "b", Kids: []tree{{Label: "c"}}}}})
	},
	"opaque_time": func() []byte {
		return encodeAll(stamped{When: time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC), N: 1})
	},
}

func main() {
	if len(os.Args) == 4 && os.Args[1] == "-one" {
		f, ok := fixtures[os.Args[2]]
		if !ok {
			panic("unknown fixture " + os.Args[2])
		}
		path := filepath.Join(os.Args[3], os.Args[2]+".gob")
		if err := os.WriteFile(path, f(), 0o644); err != nil {
			panic(err)
		}
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: fixtures-gen <output dir>")
		os.Exit(2)
	}
	names := make([]string, 0, len(fixtures))
	for n := range fixtures {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		cmd := exec.Command(os.Args[0], "-one", n, os.Args[1])
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, n, err)
			os.Exit(1)
		}
		fmt.Println("wrote", n)
	}
}
