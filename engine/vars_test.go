package main

import "testing"

// Vars keep a map's meaning: set to nil is set, Delete unsets, Set replaces in place, and a copy is its own.
func TestVarsAsAMap(t *testing.T) {
	vs := VarsOf(map[string]any{"a": 1.0, "b": "x"})
	vs.Set("c", nil)
	if v, ok := vs.Lookup("c"); !ok || v != nil {
		t.Fatalf("c set to nil: %v %v", v, ok)
	}
	if _, ok := vs.Lookup("d"); ok || vs.Get("d") != nil {
		t.Fatal("d was never set")
	}
	vs.Set("a", 2.0)
	vs.Delete("a")
	vs.Delete("a")
	if _, ok := vs.Lookup("a"); ok {
		t.Fatal("a deleted")
	}
	if vs.Get("b") != "x" || len(vs.kv) != 2 {
		t.Fatalf("b and c remain: %v", vs.kv)
	}
	local := vs.clone(1)
	local.Set("b", "y")
	local.Set("e", true)
	if vs.Get("b") != "x" || vs.Get("e") != nil {
		t.Fatalf("a clone's changes stay its own: %v", vs.kv)
	}
	for i := range 20 {
		vs.Set(string(rune('f'+i)), float64(i))
	}
	if vs.Get("y") != 19.0 || vs.Get("b") != "x" {
		t.Fatalf("past its room: %v", vs.kv)
	}
}
