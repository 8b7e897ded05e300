// The microphone (and camera) for a call.

// voiceProcessing: the browser's echo cancellation, noise suppression and gain control. They
// suit a person on speakers; off, the microphone is sent as it is (test tones, music).
export async function openLocalMedia({video, voiceProcessing}) {
  if (!navigator.mediaDevices?.getUserMedia) {
    const error = new Error("navigator.mediaDevices is missing (not a secure context)");
    error.name = "InsecureContextError";
    throw error;
  }
  const audio = {
    echoCancellation: voiceProcessing,
    noiseSuppression: voiceProcessing,
    autoGainControl: voiceProcessing,
  };
  return navigator.mediaDevices.getUserMedia({
    audio,
    video: video && {width: {ideal: 640}, height: {ideal: 480}},
  });
}
