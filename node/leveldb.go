package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	leveldb "github.com/ipfs/go-ds-leveldb"
	lvl "github.com/syndtr/goleveldb/leveldb"
	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/filter"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/storage"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// Opening a LevelDB store strictly.
//
// By default goleveldb drops what it cannot read: a journal block whose
// checksum fails is skipped (only its own LOG file says so) and the
// journal replays on, so a damaged journal loses acknowledged writes while
// the records written after them, the causal contexts among them, survive
// and claim them. go-ds-leveldb adds to this: when an open reports
// corruption, NewDatastore calls leveldb.RecoverFile by itself.
//
// OpenLevelDB therefore first opens the store with goleveldb directly, in
// strict mode (a damaged journal or manifest fails the open instead of
// being skipped) and reads every table once with block checksums on, and
// only then hands the directory to go-ds-leveldb. One defect is not
// damage: a kill -9 during a write leaves the journal's last record cut
// short, and that record was never acknowledged (a write is acknowledged
// only after it is whole in the file and synced). A cut at the very end
// of the newest journal is accepted and dropped, as goleveldb's default
// does; anything else refuses the open with ErrStoreDamaged.

// strictOpen is the strict level of every open: goleveldb's default
// (journal and block checksums, a corrupt table halts reads and
// compactions) plus a corrupt journal or manifest failing the open.
const strictOpen = opt.DefaultStrict | opt.StrictJournal | opt.StrictManifest

// levelDBOptions returns the options OpenLevelDB uses (see OpenLevelDB for
// the departures from LevelDB's defaults).
func levelDBOptions(sync bool, strict opt.Strict) *opt.Options {
	return &opt.Options{
		NoSync:      !sync,
		WriteBuffer: levelDBWriteBuffer,
		Filter:      filter.NewBloomFilter(10),
		Strict:      strict,
	}
}

// checkLevelDB opens the store in dir strictly, reads every table once,
// and closes it. It returns an error wrapping ErrStoreDamaged for damage,
// and an error of its own for anything else (a locked directory).
func checkLevelDB(dir string, sync bool) error {
	strict := strictOpen
	db, err := lvl.OpenFile(dir, levelDBOptions(sync, strict))
	// A record cut by a crash at the end of the newest journal or
	// manifest: let goleveldb drop it, as it does by default. (A manifest
	// record is cut only if the process died writing it; the files it
	// would have made obsolete are deleted only after it is whole.) Each
	// file may be cut once, hence two rounds.
	for range 2 {
		var cerr *lerrors.ErrCorrupted
		if err == nil || !errors.As(err, &cerr) {
			break
		}
		relax := opt.Strict(0)
		switch cerr.Fd.Type {
		case storage.TypeJournal:
			relax = opt.StrictJournal
		case storage.TypeManifest:
			relax = opt.StrictManifest
		}
		if relax == 0 || strict&relax == 0 {
			break
		}
		if torn, terr := journalTornTail(dir, cerr.Fd); terr != nil || !torn {
			break
		}
		strict &^= relax
		db, err = lvl.OpenFile(dir, levelDBOptions(sync, strict))
	}
	if err != nil {
		return damaged(dir, err)
	}
	// Tables are read lazily; read each block once now, so that a damaged
	// table refuses the start rather than failing reads later. It reads
	// the whole store once per start (docs/DESIGN.md has the cost).
	it := db.NewIterator(nil, &opt.ReadOptions{DontFillCache: true, Strict: opt.StrictBlockChecksum | opt.StrictReader})
	for it.Next() {
	}
	err = it.Error()
	it.Release()
	if cerr := db.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return damaged(dir, err)
	}
	return nil
}

// damaged wraps a LevelDB open error: damage as ErrStoreDamaged, naming
// the file, anything else as it is.
func damaged(dir string, err error) error {
	if !lerrors.IsCorrupted(err) {
		return fmt.Errorf("open store %s: %w (is another crdt-catalog using this data directory?)", dir, err)
	}
	file := "a file"
	var cerr *lerrors.ErrCorrupted
	if errors.As(err, &cerr) && !cerr.Fd.Zero() {
		file = filepath.Join(dir, cerr.Fd.String())
	} else if errors.Is(err, lerrors.ErrNotFound) {
		file = "a table the manifest names"
	}
	return fmt.Errorf("%w: %s in %s is damaged: %v; the node does not start on a damaged store, which could hold less than it claims",
		ErrStoreDamaged, file, dir, err)
}

// journalTornTail reports whether the only defect of fd in dir, a journal
// or a manifest (both are written in LevelDB's journal format), is a cut
// at its end: the last record is incomplete (its last chunk ends past the
// end of the file, or a record's chunks stop at the end of the file),
// every chunk before it is intact, and fd is the newest file of its kind.
// Anything else — a complete chunk whose checksum fails, an impossible
// length or type, a defect followed by intact chunks — is damage.
func journalTornTail(dir string, fd storage.FileDesc) (bool, error) {
	pattern, prefix, suffix := "*.log", "", ".log"
	if fd.Type == storage.TypeManifest {
		pattern, prefix, suffix = "MANIFEST-*", "MANIFEST-", ""
	}
	files, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		return false, err
	}
	for _, f := range files {
		num, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), prefix), suffix), 10, 64)
		if err == nil && num > fd.Num {
			return false, nil // a later file exists: writes went on after the defect
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, fd.String()))
	if err != nil {
		return false, err
	}
	const (
		blockSize  = 32 << 10
		headerSize = 7
		full       = 1
		first      = 2
		middle     = 3
		last       = 4
	)
	inRecord := false
	for pos := 0; pos < len(b); {
		left := blockSize - pos%blockSize
		if left < headerSize {
			pos += left // block trailer
			continue
		}
		if pos+headerSize > len(b) {
			return true, nil // a header cut by the end of the file
		}
		sum := binary.LittleEndian.Uint32(b[pos:])
		length := int(binary.LittleEndian.Uint16(b[pos+4:]))
		typ := b[pos+6]
		end := pos + headerSize + length
		switch {
		case allZero(b[pos:]):
			// A file extended by a machine crash before its data reached
			// the disk (possible only with -sync=false): nothing was
			// acknowledged there as durable.
			return true, nil
		case typ < full || typ > last:
			return false, nil
		case end > pos+left:
			return false, nil // no writer makes a chunk longer than its block
		case end > len(b):
			return true, nil // the last chunk, cut by the end of the file
		case util.NewCRC(b[pos+headerSize-1:end]).Value() != sum:
			return false, nil // a whole chunk that does not match its checksum
		}
		switch typ {
		case full, first:
			if inRecord {
				return false, nil
			}
			inRecord = typ == first
		case middle, last:
			if !inRecord {
				return false, nil
			}
			inRecord = typ == middle
		}
		pos = end
	}
	return inRecord, nil // a record whose last chunk never came: cut; else no defect found
}

// RepairLevelDB salvages what can be read of the LevelDB store in dir and
// returns it open, for Repair: it rebuilds the manifest from the table
// files, drops a damaged table whole, and replays the journal skipping
// damaged blocks. (goleveldb v1.0.0 could keep the readable keys of a
// damaged table, but its rebuild fails on a table that holds two versions
// of one key, as ours do: every commit rewrites the bookkeeping records.)
// Records may come back older than they were, or not at all; Repair then
// makes the catalog claim only what it holds. The directory must not be
// open elsewhere.
func RepairLevelDB(dir string, sync bool) (*leveldb.Datastore, error) {
	if _, err := os.Stat(filepath.Join(dir, "CURRENT")); err != nil {
		return nil, fmt.Errorf("repair store %s: no LevelDB store there: %w", dir, err)
	}
	salvage := opt.StrictJournalChecksum | opt.StrictBlockChecksum | opt.StrictRecovery
	db, err := lvl.RecoverFile(dir, levelDBOptions(sync, salvage))
	if err != nil {
		return nil, fmt.Errorf("repair store %s: %w", dir, err)
	}
	if err := db.Close(); err != nil {
		return nil, fmt.Errorf("repair store %s: %w", dir, err)
	}
	if err := checkLevelDB(dir, sync); err != nil {
		return nil, fmt.Errorf("repair store %s: still damaged after salvage: %w", dir, err)
	}
	store, err := leveldb.NewDatastore(dir, (*leveldb.Options)(levelDBOptions(sync, strictOpen)))
	if err != nil {
		return nil, fmt.Errorf("repair store %s: %w", dir, err)
	}
	return store, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
