"""The local stack: Azurite + the emulator + the app under devhost, managed as child processes."""
