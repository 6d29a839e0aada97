package proxy

import (
	"bytes"
	"sync"
)

// Buffers reused across requests. A proxied call used to allocate more
// bytes in buffers than in everything else together: ReverseProxy's 32 KiB
// copy buffer, and the buffer the answer is read into for settlement.

// copyBuffers is ReverseProxy's BufferPool.
type copyBuffers struct{}

var copyBufferPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (copyBuffers) Get() []byte { return *copyBufferPool.Get().(*[]byte) }

func (copyBuffers) Put(b []byte) {
	if cap(b) == 32<<10 {
		b = b[:cap(b)]
		copyBufferPool.Put(&b)
	}
}

// maxPooledBody bounds the buffers kept in bodyPool: a rare large answer
// is left to the garbage collector rather than pinned in the pool.
const maxPooledBody = 64 << 10

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBody() *bytes.Buffer {
	b := bodyPool.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

func putBody(b *bytes.Buffer) {
	if b != nil && b.Cap() <= maxPooledBody {
		bodyPool.Put(b)
	}
}
