package wire

// Commands whose argument is a schema name, string<EOF>.

// InitDB is COM_INIT_DB: change the default schema (what USE does).
type InitDB struct{ Schema string }

// CreateDB is COM_CREATE_DB (removed in MySQL 8, still in MariaDB).
type CreateDB struct{ Schema string }

// DropDB is COM_DROP_DB (removed in MySQL 8, still in MariaDB).
type DropDB struct{ Schema string }

func (*InitDB) Type() CommandType   { return ComInitDB }
func (*CreateDB) Type() CommandType { return ComCreateDB }
func (*DropDB) Type() CommandType   { return ComDropDB }

func (c *InitDB) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return append(append(dst, byte(ComInitDB)), c.Schema...), nil
}
func (c *CreateDB) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return append(append(dst, byte(ComCreateDB)), c.Schema...), nil
}
func (c *DropDB) Encode(dst []byte, _ Capabilities) ([]byte, error) {
	return append(append(dst, byte(ComDropDB)), c.Schema...), nil
}
