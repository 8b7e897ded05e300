// Call quality from an RTCStatsReport: round trip, jitter, loss, what arrived and what was sent.

export function summariseStats(report) {
  const summary = {rtt: null, jitter: null, loss: null, audioPackets: 0, videoFrames: 0,
    packetsSent: 0};
  let received = 0;
  let lost = 0;
  let pairId = null;
  let remoteRtt = null;
  for (const stat of report.values()) {
    if (stat.type === "transport" && stat.selectedCandidatePairId) {
      pairId = stat.selectedCandidatePairId;
    } else if (stat.type === "inbound-rtp") {
      received += stat.packetsReceived ?? 0;
      lost += Math.max(0, stat.packetsLost ?? 0);
      if (stat.kind === "audio") {
        summary.audioPackets = stat.packetsReceived ?? 0;
        summary.jitter = stat.jitter ?? null;
      } else if (stat.kind === "video") {
        summary.videoFrames = stat.framesDecoded ?? 0;
      }
    } else if (stat.type === "remote-inbound-rtp" && stat.roundTripTime !== undefined) {
      remoteRtt = stat.roundTripTime;
    } else if (stat.type === "outbound-rtp") {
      summary.packetsSent += stat.packetsSent ?? 0;
    }
  }
  summary.rtt = report.get(pairId)?.currentRoundTripTime ?? remoteRtt;
  summary.loss = received + lost > 0 ? lost / (received + lost) : null;
  return summary;
}

// The summary as display strings, keyed like it.
export function formatStats({rtt, jitter, loss, audioPackets, videoFrames, packetsSent}) {
  const ms = (seconds) => (seconds === null ? "–" : `${Math.round(seconds * 1000)} ms`);
  return {
    rtt: ms(rtt),
    jitter: ms(jitter),
    loss: loss === null ? "–" : `${(loss * 100).toFixed(1)} %`,
    audioPackets: String(audioPackets),
    videoFrames: String(videoFrames),
    packetsSent: String(packetsSent),
  };
}
