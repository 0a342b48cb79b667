//! Sans-IO SIP proxy logic.
