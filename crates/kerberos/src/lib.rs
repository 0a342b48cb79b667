//! Kerberos acceptor (MIT krb5 through GSS-API).
