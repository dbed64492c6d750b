# bash completion for vshx: a thin wrapper around `vshx complete`, which knows the commands,
# options, domains, disks and chain layers.  Install: eval "$(vshx completion bash)" in
# ~/.bashrc, or vshx completion bash > /usr/share/bash-completion/completions/vshx
_vshx() {
    local line=${COMP_LINE:0:COMP_POINT}
    line=${line#"${COMP_WORDS[0]}"}
    line=${line#"${line%%[![:space:]]*}"}
    # the word being completed, as typed up to the cursor: bash splits qemu:///system at its
    # ':' (COMP_WORDBREAKS) and replaces only what follows the last one
    local cur=${line##*[[:space:]]}
    # one candidate a line, taken as it is: vshx quotes each for the shell already, so no
    # word splitting and no pathname expansion (nullglob, failglob, vda[2] beside a file vda2)
    local candidate
    COMPREPLY=()
    while IFS= read -r candidate; do
        [[ -n $candidate ]] && COMPREPLY+=("$candidate")
    done < <(command "${COMP_WORDS[0]}" complete --shell bash -- "$line" 2>/dev/null)
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == */ ]]; then
        compopt -o nospace 2>/dev/null
    fi
    # so each candidate loses what comes up to that ':' (as bash-completion's
    # __ltrim_colon_completions does; done here, so eval "$(vshx completion bash)" alone works)
    if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
        local kept=${cur%"${cur##*:}"} i
        for i in "${!COMPREPLY[@]}"; do
            COMPREPLY[i]=${COMPREPLY[i]#"$kept"}
        done
    fi
}
complete -F _vshx vshx
