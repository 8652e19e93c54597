# Install the loyalty edge gateway as a Windows service (run as Administrator), next to the
# MICROS RES server. Needs Python 3.11+ (py launcher) and WinSW-x64.exe downloaded beside this
# script. Usage: .\install.ps1 -Source C:\path\to\edge-gateway [-InstallDir C:\edge-gateway]
param(
    [Parameter(Mandatory = $true)][string]$Source,
    [string]$InstallDir = "C:\edge-gateway"
)
$ErrorActionPreference = "Stop"

$data = Join-Path $env:ProgramData "edge-gateway"
New-Item -ItemType Directory -Force -Path $InstallDir, $data, (Join-Path $data "data"), (Join-Path $data "logs") | Out-Null

# The application in its own virtual environment.
py -3.11 -m venv (Join-Path $InstallDir "venv")
& (Join-Path $InstallDir "venv\Scripts\pip.exe") install --disable-pip-version-check $Source

# A default configuration, kept if one is already there (upgrade).
$config = Join-Path $data "gateway.toml"
if (-not (Test-Path $config)) {
    Copy-Item (Join-Path $Source "packaging\gateway.toml") $config
    Write-Host "Edit $config (store_id, central url, sim.allow) before starting the service."
}

# The service: WinSW with its XML definition.
Copy-Item (Join-Path $PSScriptRoot "WinSW-x64.exe") (Join-Path $InstallDir "edge-gateway.exe") -Force
Copy-Item (Join-Path $PSScriptRoot "edge-gateway.xml") (Join-Path $InstallDir "edge-gateway.xml") -Force
& (Join-Path $InstallDir "edge-gateway.exe") install
# Registers connect to the SIM port: open it for the store network only.
New-NetFirewallRule -DisplayName "Loyalty edge gateway SIM" -Direction Inbound -Protocol TCP `
    -LocalPort 5009 -RemoteAddress LocalSubnet -Action Allow -ErrorAction SilentlyContinue | Out-Null
& (Join-Path $InstallDir "edge-gateway.exe") start
& (Join-Path $InstallDir "venv\Scripts\edge-gateway.exe") --config $config check-config
