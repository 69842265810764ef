"""Cyber sentinel agent: security findings over OT log events (protocols.otlog). Pure computation:
no storage, no HTTP, no asyncio; the hub hands it events and turns its findings into incidents.

Detections, and how their risk level is set (levels are agents.findings.SEVERITIES):

==========================  ==========  =====================================================
type                        level       escalation
==========================  ==========  =====================================================
brute_force                 WARNING     N failed logins (default 4) within the window (default
                                        10 min) per (source, target). CRITICAL when a login
                                        from the same source to the same target succeeds after
                                        the N-th failure, within the window of the last one.
breaker_sequence            CRITICAL    K breaker_open commands (default 3) on K distinct
                                        breakers within 60 s in one substation. EMERGENCY when
                                        any of them came from an unknown master or a network
                                        not allowed.
command_rate                WARNING     A master's commands in 60 s reach 10x its usual rate
                                        (and at least 20). CRITICAL from an unknown master or a
                                        network not allowed.
off_hours_command           WARNING     A control command outside the substation's operating
                                        hours, in its local time zone.
disallowed_network          CRITICAL    A control command from a source outside the
                                        substation's allowed CIDRs.
unknown_master              CRITICAL    A control command from a master (or source) not in
                                        the substation's allow-list.
setpoint_out_of_spec        WARNING     A setpoint_write outside the point's allowed range that
                                        the device refused; CRITICAL once one was accepted.
config_without_ticket       INFO        A configuration change naming no change ticket in its
                                        detail that failed; WARNING once one was applied.
==========================  ==========  =====================================================

One finding per ongoing condition and call: ``Finding.key`` is ``cyber:<type>:<who>`` (e.g.
``cyber:brute_force:192.168.1.57:RTU-MOM01``), ``start`` its first evidence, ``timestamp`` its
latest. Each finding carries a recommended response (``recommendation`` as text,
``facts["actions"]`` as codes: isolate_device, block_source, reset_credentials, escalate_soc,
review_access_logs) and its chain of evidence: ``facts["evidence"]`` the log entries in time
order (at most ``evidence_limit``: the first and last halves, ``facts["evidence_omitted"]``
says how many were left out between them), ``facts["evidence_chain"]`` and
``facts["evidence_sha256"]`` their sha256 hash chain (:mod:`agents.cyber_sentinel.evidence`).

:func:`alert_text` renders a finding in the seed's words: ``SECURITY ALERT: Failed login attempt
on RTU-MOM01 from IP 192.168.1.57 (4 failures in 10 minutes). Potential brute force attack.
RECOMMEND: Block IP address, reset RTU password, review access logs.``
"""

from __future__ import annotations

from agents.cyber_sentinel.config import DAYS, CyberConfig, SetpointLimit, SitePolicy
from agents.cyber_sentinel.detect import AGENT, analyse, worst_severity
from agents.cyber_sentinel.evidence import chain, verify
from agents.findings import Finding

__all__ = [
    "AGENT",
    "DAYS",
    "CyberConfig",
    "Finding",
    "SetpointLimit",
    "SitePolicy",
    "alert_text",
    "analyse",
    "chain",
    "verify",
    "worst_severity",
]


def alert_text(finding: Finding) -> str:
    """One line for an operator: ``SECURITY ALERT: <description> RECOMMEND: <recommendation>``."""
    return f"SECURITY ALERT: {finding.description} RECOMMEND: {finding.recommendation}"
