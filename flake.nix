{
  description = "cairn: a reproducible, content-addressed build system";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachDefaultSystem (system:
      let
        pkgs = nixpkgs.legacyPackages.${system};
        manifest = (pkgs.lib.importTOML ./Cargo.toml).package;
      in
      {
        packages.default = pkgs.rustPlatform.buildRustPackage {
          pname = manifest.name;
          version = manifest.version;
          src = pkgs.lib.cleanSource ./.;
          # Builds with exactly the dependency versions of the committed Cargo.lock.
          cargoLock.lockFile = ./Cargo.lock;
          # The integration tests run actions with sh and python3.
          nativeCheckInputs = [ pkgs.python3 ];
          meta = {
            description = manifest.description;
            mainProgram = "cairn";
          };
        };

        devShells.default = pkgs.mkShell {
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.rustfmt
            pkgs.clippy
            pkgs.rust-analyzer
            pkgs.python3
          ];
        };
      });
}
