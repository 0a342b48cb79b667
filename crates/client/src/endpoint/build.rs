//! Building what the endpoint sends: requests (REGISTER legs and others) with their credentials,
//! and responses to the server's requests.

use sagw_auth::Rng;
use sagw_sip::Message;

use super::digest::digest_credentials;
use super::register::RegStage;
use super::trace::summarise_credentials;
use super::{Endpoint, Failure, Outstanding, TxKind, Waiting};
use crate::sa::LegParams;
use crate::util::rand_hex;

impl Endpoint {
    /// The request `o` describes, without credentials (new branch and From tag each time).
    fn build(&mut self, o: &Outstanding, rng: &mut dyn Rng) -> Result<Message, Failure> {
        let Outstanding {
            method,
            ruri,
            to,
            call_id,
            cseq,
            body,
            ..
        } = o;
        let branch = rand_hex(rng, 8);
        let tag = rand_hex(rng, 5);
        let t = self.local.transport;
        let addr = &self.local.addr;
        // No epid at all when there is none: a standard SIP client, for probing what the edge
        // offers such clients.
        let epid = if self.cfg.epid.is_empty() {
            String::new()
        } else {
            format!(";epid={}", self.cfg.epid)
        };
        let mut s = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{t} {addr};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <{aor}>;tag={tag}{epid}\r\nTo: <{to}>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:{addr};transport={tl}>\r\nUser-Agent: {ua}\r\n",
            aor = self.cfg.aor,
            tl = t.to_ascii_lowercase(),
            ua = self.cfg.user_agent,
        );
        if method == "REGISTER"
            && let Some(e) = self.cfg.expires
        {
            s.push_str(&format!("Expires: {e}\r\n"));
        }
        let body_bytes: &[u8] = match body {
            Some((ct, b)) => {
                s.push_str(&format!("Content-Type: {ct}\r\n"));
                b
            }
            None => &[],
        };
        s.push_str(&format!("Content-Length: {}\r\n\r\n", body_bytes.len()));
        let mut raw = s.into_bytes();
        raw.extend_from_slice(body_bytes);
        Message::parse(&raw).map_err(|e| Failure::Build(format!("{method}: {e}")))
    }

    pub(super) fn next_register(
        &mut self,
        stage: RegStage,
        rng: &mut dyn Rng,
    ) -> Result<Message, Failure> {
        let call_id = match &self.reg_call_id {
            Some(c) => c.clone(),
            None => {
                let c = rand_hex(rng, 16);
                self.reg_call_id = Some(c.clone());
                c
            }
        };
        self.reg_cseq = self.reg_cseq.wrapping_add(1);
        let o = Outstanding {
            call_id,
            cseq: self.reg_cseq,
            method: "REGISTER".into(),
            ruri: self.cfg.registrar.clone(),
            to: self.cfg.aor.clone(),
            body: None,
            kind: TxKind::Register(stage),
        };
        let msg = self.build(&o, rng)?;
        self.waiting = Waiting::Response(o);
        Ok(msg)
    }

    pub(super) fn send_request(
        &mut self,
        o: &mut Outstanding,
        rng: &mut dyn Rng,
    ) -> Result<Message, Failure> {
        let mut msg = self.build(o, rng)?;
        self.add_credentials(&mut msg, &o.method, &o.ruri, rng)?;
        let cred = msg
            .header("Authorization")
            .or_else(|| msg.header("Proxy-Authorization"))
            .map(summarise_credentials)
            .unwrap_or_default();
        self.record_sent(&msg, || cred);
        Ok(msg)
    }

    pub(super) fn add_credentials(
        &mut self,
        msg: &mut Message,
        method: &str,
        uri: &str,
        rng: &mut dyn Rng,
    ) -> Result<(), Failure> {
        if let Some(sa) = &mut self.sa {
            return sa
                .sign(msg, LegParams::default(), rng)
                .map_err(Failure::Kerberos);
        }
        if let Some(d) = &mut self.digest {
            let value = digest_credentials(d, &self.cfg.user, method, uri, rng)?;
            msg.set_header(d.family.credentials_header(), &value);
        }
        Ok(())
    }

    pub(super) fn build_response(
        &mut self,
        req: &Message,
        status: u16,
        reason: &str,
        rng: &mut dyn Rng,
    ) -> Option<Message> {
        let mut s = format!("SIP/2.0 {status} {reason}\r\n");
        for v in req.header_all("Via") {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        let to = req.header("To")?;
        let mut to_value = to.to_owned();
        // The server finds our SA for a response through the To epid.
        if req.to().and_then(|na| na.param("epid")).is_none() && !self.cfg.epid.is_empty() {
            to_value.push_str(&format!(";epid={}", self.cfg.epid));
        }
        if req.to().and_then(|na| na.tag()).is_none() {
            to_value.push_str(&format!(";tag={}", rand_hex(rng, 5)));
        }
        s.push_str(&format!(
            "From: {}\r\nTo: {to_value}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
            req.header("From")?,
            req.call_id()?,
            req.header("CSeq")?,
        ));
        let mut m = Message::parse(s.as_bytes()).ok()?;
        if let Some(sa) = &mut self.sa {
            // Responses we send are signed like requests ([MS-SIPAE]; pidgin-sipe does the same).
            sa.sign(&mut m, LegParams::default(), rng).ok()?;
        }
        Some(m)
    }
}
