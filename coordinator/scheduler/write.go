package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrDeposed is returned by a pass whose writes were refused because this
// coordinator no longer holds the leader's election key: nothing of the
// batch that found out was written.
var ErrDeposed = errors.New("scheduler: no longer the leader (the election key changed): nothing written")

// LeaderFence returns the comparisons that hold only while the election key
// key still exists as created at revision rev: the fence of a leader whose
// concurrency.Election has Key() key and Rev() rev.
func LeaderFence(key string, rev int64) []clientv3.Cmp {
	return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", rev)}
}

// Batch limits: etcd refuses a transaction of more than 128 operations
// (--max-txn-ops) or a request over 1.5 MiB (--max-request-bytes).
const (
	maxBatchOps   = 100
	maxBatchBytes = 512 << 10
	maxInFlight   = 4
)

// write is one operation of a pass, with its size in bytes.
type write struct {
	op   clientv3.Op
	size int
}

func put(key, value string) write {
	return write{op: clientv3.OpPut(key, value), size: len(key) + len(value)}
}

func del(key string) write {
	return write{op: clientv3.OpDelete(key), size: len(key)}
}

// guarded is w applied only while every guard holds; otherwise it is
// skipped without failing the rest of its batch.
func guarded(w write, guards ...clientv3.Cmp) write {
	return write{op: clientv3.OpTxn(guards, []clientv3.Op{w.op}, nil), size: w.size + 64*len(guards)}
}

// fence is the comparisons every write requires (none when unfenced).
func (c *Controller) fence() []clientv3.Cmp {
	if c.cfg.Fence == nil {
		return nil
	}
	return c.cfg.Fence()
}

// commit writes ws in transactions of at most maxBatchOps operations and
// maxBatchBytes bytes, up to maxInFlight at a time, each also requiring the
// leader's fence. A batch refused by the fence makes it return ErrDeposed.
// It returns the newest revision it wrote at.
func (c *Controller) commit(ctx context.Context, ws []write) (int64, error) {
	if len(ws) == 0 {
		return 0, nil
	}
	fence := c.fence()
	var batches [][]clientv3.Op
	var cur []clientv3.Op
	size := 0
	for _, w := range ws {
		if len(cur) > 0 && (len(cur) >= maxBatchOps || size+w.size > maxBatchBytes) {
			batches = append(batches, cur)
			cur, size = nil, 0
		}
		cur = append(cur, w.op)
		size += w.size
	}
	batches = append(batches, cur)
	c.m.txns.Add(float64(len(batches)))

	var (
		mu    sync.Mutex
		first error
		rev   int64
		wg    sync.WaitGroup
		sem   = make(chan struct{}, maxInFlight)
	)
	for _, ops := range batches {
		wg.Add(1)
		sem <- struct{}{}
		go func(ops []clientv3.Op) {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := c.cfg.Etcd.Txn(ctx).If(fence...).Then(ops...).Commit()
			switch {
			case err != nil:
				err = fmt.Errorf("scheduler: write %d keys: %w", len(ops), err)
			case !resp.Succeeded:
				err = ErrDeposed
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil || errors.Is(err, ErrDeposed) {
					first = err
				}
				return
			}
			if wrote(ops, resp) && resp.Header.Revision > rev {
				rev = resp.Header.Revision
			}
		}(ops)
	}
	wg.Wait()
	return rev, first
}

// wrote reports whether a transaction of ops changed anything: a plain op,
// or a guarded one whose guards held.
func wrote(ops []clientv3.Op, resp *clientv3.TxnResponse) bool {
	for i, op := range ops {
		if !op.IsTxn() {
			return true
		}
		if i < len(resp.Responses) {
			if t := resp.Responses[i].GetResponseTxn(); t != nil && t.Succeeded {
				return true
			}
		}
	}
	return false
}

// leading reports whether the fence still holds (always, unfenced).
func (c *Controller) leading(ctx context.Context) error {
	fence := c.fence()
	if len(fence) == 0 {
		return nil
	}
	resp, err := c.cfg.Etcd.Txn(ctx).If(fence...).Commit()
	if err != nil {
		return fmt.Errorf("scheduler: check leadership: %w", err)
	}
	if !resp.Succeeded {
		return ErrDeposed
	}
	return nil
}
