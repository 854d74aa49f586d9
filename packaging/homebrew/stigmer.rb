# Homebrew formula template for stigmer. The release workflow
# (.github/workflows/release.yml, job publish) fills in the version and the
# SHA-256 of each platform's tarball from the .sha256 assets and uploads the
# result as the artifact homebrew-formula, to be committed to the tap. It
# installs the prebuilt, reproducible release binary (docs/install.md).
class Stigmer < Formula
  desc "Local Stigmer stack: API server, workflow runner and agent-runner"
  homepage "https://github.com/stigmer/stigmer"
  version "@VERSION@"
  license "Apache-2.0"

  on_macos do
    on_arm do
      url "https://github.com/stigmer/stigmer/releases/download/v#{version}/stigmer-#{version}-darwin-arm64.tar.gz"
      sha256 "@SHA256_DARWIN_ARM64@"
    end
    on_intel do
      url "https://github.com/stigmer/stigmer/releases/download/v#{version}/stigmer-#{version}-darwin-amd64.tar.gz"
      sha256 "@SHA256_DARWIN_AMD64@"
    end
  end
  on_linux do
    on_intel do
      url "https://github.com/stigmer/stigmer/releases/download/v#{version}/stigmer-#{version}-linux-amd64.tar.gz"
      sha256 "@SHA256_LINUX_AMD64@"
    end
  end

  def install
    bin.install "stigmer"
    # The applet links, relative, as `make install` makes them.
    %w[agent-runner-supervisor stigmer-server stigmer-workflow-runner].each do |l|
      bin.install_symlink "stigmer" => l
    end
    man1.install "stigmer.1"
    bash_completion.install "completions/stigmer.bash" => "stigmer"
    zsh_completion.install "completions/_stigmer"
    fish_completion.install "completions/stigmer.fish"
    pkgshare.install "units"
  end

  # `brew services start stigmer`: the supervisor in the foreground, restarted
  # after a crash but not after a clean exit (`stigmer daemon stop`).
  service do
    run [opt_bin/"stigmer", "daemon", "run", "--no-echo"]
    keep_alive successful_exit: false
    log_path var/"log/stigmer.log"
    error_log_path var/"log/stigmer.log"
  end

  test do
    assert_match "stigmer #{version}", shell_output("#{bin}/stigmer version")
    assert_match "Usage: stigmer", shell_output("#{bin}/stigmer --help")
  end
end
