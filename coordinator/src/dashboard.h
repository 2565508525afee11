// The live dashboard: one self-contained HTML page (no external scripts, so it works offline and behind
// firewalls) that polls the coordinator's /api/jobs and /api/job endpoints every second and draws each
// D layer's routed fraction over the steps, loss, tokens/s, the workers with their heartbeats, and the
// job's events.
#pragma once

#include <string>

namespace dtrn::coordinator {

const std::string& dashboard_html();

}  // namespace dtrn::coordinator
