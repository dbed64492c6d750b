# fish completion for vshx: a thin wrapper around `vshx complete`, which prints each candidate
# with its description.  Install: copy to ~/.config/fish/completions/vshx.fish.
function __vshx_complete
    set -l line (commandline -cp | string replace -r '^\s*\S+\s*' '')
    command vshx complete --shell fish -- "$line" 2>/dev/null
end
complete -c vshx -f -a '(__vshx_complete)'
