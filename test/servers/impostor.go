package servers

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
)

// Impostor is a TCP server that is not the queue a client expects (an SSH server, a
// web server, a fake Redis): it writes Greeting as soon as a connection opens, then
// answers what it reads with Answer. Tests point probes at it to see that nothing it
// sends ends up in a message.
type Impostor struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	n     int
}

// ImpostorOptions say what an Impostor sends.
type ImpostorOptions struct {
	// Greeting is written once, as soon as a connection is accepted.
	Greeting []byte
	// Answer returns what to write for the bytes of one read (nothing if it returns nil);
	// close makes the Impostor close the connection after writing.
	Answer func(read []byte) (reply []byte, close bool)
}

// StartImpostor starts an Impostor on a free loopback port.
func StartImpostor(o ImpostorOptions) (*Impostor, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	i := &Impostor{l: l}
	go i.accept(o)
	return i, nil
}

func (i *Impostor) accept(o ImpostorOptions) {
	for {
		c, err := i.l.Accept()
		if err != nil {
			return
		}
		i.mu.Lock()
		i.conns = append(i.conns, c)
		i.n++
		i.mu.Unlock()
		go serveImpostor(c, o)
	}
}

func serveImpostor(c net.Conn, o ImpostorOptions) {
	defer func() { _ = c.Close() }()
	if len(o.Greeting) > 0 {
		if _, err := c.Write(o.Greeting); err != nil {
			return
		}
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if o.Answer == nil {
			continue
		}
		reply, closeIt := o.Answer(buf[:n])
		if len(reply) > 0 {
			if _, err := c.Write(reply); err != nil {
				return
			}
		}
		if closeIt {
			return
		}
	}
}

// Addr is the Impostor's host:port.
func (i *Impostor) Addr() string { return i.l.Addr().String() }

// Accepted is how many connections the Impostor has accepted.
func (i *Impostor) Accepted() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.n
}

// Close stops the Impostor and closes its connections.
func (i *Impostor) Close() {
	_ = i.l.Close()
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, c := range i.conns {
		_ = c.Close()
	}
}

// SSHBanner is the first line of an SSH server; "Banner" stands for what a banner grabber
// would be after (a version, a host name).
const SSHBanner = "SSH-2.0-Banner\r\n"

// SSHServer is an Impostor that greets with SSHBanner and then reads and ignores
// everything, as an SSH server waiting for the client's version line does.
func SSHServer() (*Impostor, error) {
	return StartImpostor(ImpostorOptions{Greeting: []byte(SSHBanner)})
}

// RedisErrorServer is an Impostor that speaks RESP and answers every command with the
// error reply line (e.g. "-ERR Banner secret\r\n").
func RedisErrorServer(line string) (*Impostor, error) {
	return StartImpostor(ImpostorOptions{Answer: func(read []byte) ([]byte, bool) {
		// One reply per command: each command is a RESP array, "*<n>\r\n..." (the
		// commands of the tests hold no argument that starts a line with '*').
		n := bytes.Count(read, []byte("\r\n*"))
		if bytes.HasPrefix(read, []byte("*")) {
			n++
		}
		return bytes.Repeat([]byte(line), max(n, 1)), false
	}})
}

// HTTPServer is an Impostor that answers every request with response, a whole HTTP/1.1
// response (status line, headers and body), and closes the connection.
func HTTPServer(response string) (*Impostor, error) {
	return StartImpostor(ImpostorOptions{Answer: func([]byte) ([]byte, bool) { return []byte(response), true }})
}

// AMQPCloser is an Impostor that answers the AMQP protocol header with a Connection.Close
// of the given reply code and text, as a broker does when it refuses a connection.
func AMQPCloser(code uint16, text string) (*Impostor, error) {
	return StartImpostor(ImpostorOptions{Answer: func([]byte) ([]byte, bool) {
		return amqpConnectionClose(code, text), false
	}})
}

// amqpConnectionClose is the method frame of connection.close (class 10, method 50) on
// channel 0.
func amqpConnectionClose(code uint16, text string) []byte {
	var payload bytes.Buffer
	_ = binary.Write(&payload, binary.BigEndian, []uint16{10, 50, code})
	payload.WriteByte(byte(len(text)))
	payload.WriteString(text)
	_ = binary.Write(&payload, binary.BigEndian, []uint16{0, 0}) // failing class and method
	var frame bytes.Buffer
	frame.WriteByte(1) // a method frame
	_ = binary.Write(&frame, binary.BigEndian, uint16(0))
	_ = binary.Write(&frame, binary.BigEndian, uint32(payload.Len()))
	frame.Write(payload.Bytes())
	frame.WriteByte(0xCE) // frame end
	return frame.Bytes()
}
