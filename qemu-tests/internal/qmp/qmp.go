// Package qmp sends commands to a QEMU machine over its QMP socket, for the
// tests that boot the appliance image.
package qmp

import (
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// Execute connects to the QMP socket at path, negotiates capabilities and
// runs command, waiting for its reply and skipping asynchronous events.
func Execute(path, command string) error {
	c, err := net.DialTimeout("unix", path, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	dec := json.NewDecoder(c)
	var greeting map[string]any
	if err := dec.Decode(&greeting); err != nil {
		return fmt.Errorf("QMP greeting: %w", err)
	}
	for _, cmd := range []string{"qmp_capabilities", command} {
		if _, err := fmt.Fprintf(c, `{"execute":%q}`+"\n", cmd); err != nil {
			return err
		}
		for { // skip asynchronous events until the reply
			var msg map[string]json.RawMessage
			if err := dec.Decode(&msg); err != nil {
				return fmt.Errorf("QMP %s: %w", cmd, err)
			}
			if e, ok := msg["error"]; ok {
				return fmt.Errorf("QMP %s: %s", cmd, e)
			}
			if _, ok := msg["return"]; ok {
				break
			}
		}
	}
	return nil
}
